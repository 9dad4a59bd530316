package kafkareal

import (
	"context"
	"os"
	"testing"

	"github.com/pgoutbox/pgoutbox/internal/jvm"
)

// Require skips the test when Java or the jars are missing, or fails it when the CI
// environment variable is set: CI must run the real-broker tests, never skip them.
func Require(t testing.TB) {
	t.Helper()
	if err := jvm.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kafkareal: CI is set and Java or the Kafka jars are missing: %v", err)
		}
		t.Skipf("kafkareal: skipping, Java or the Kafka jars are missing: %v", err)
	}
}

// New starts a broker for the test and closes it in t.Cleanup, printing the tail of
// the broker's log first if the test failed.
func New(t testing.TB, o Options) *Broker {
	t.Helper()
	Require(t)
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	b, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kafkareal: tail of %s:\n%s", b.LogFile(), b.LogTail(60))
		}
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}
