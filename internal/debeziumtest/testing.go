package debeziumtest

import (
	"context"
	"testing"

	"github.com/pgoutbox/pgoutbox/internal/kafkareal"
)

// New starts a worker for the test and closes it in t.Cleanup, printing the tail of
// its log first if the test failed. Like kafkareal.Require it fails the test in CI
// when Java or the jars are missing and skips it elsewhere.
func New(t testing.TB, o Options) *Connect {
	t.Helper()
	kafkareal.Require(t)
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	c, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("debeziumtest: tail of %s:\n%s", c.LogFile(), c.LogTail(60))
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}
