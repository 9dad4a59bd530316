package pgtest

import (
	"context"
	"os"
	"testing"
)

// New starts a cluster for the test and closes it in t.Cleanup, printing the
// server log's tail first if the test failed. Without server binaries it
// skips the test, or fails it when the CI environment variable is set, so a
// CI machine that lost PostgreSQL cannot pass by skipping everything.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pgtest: CI is set and PostgreSQL is missing: %v", err)
		}
		t.Skipf("pgtest: skipping, PostgreSQL is missing: %v", err)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, c)
	return c
}

// NewStandby starts a standby of primary for the test (see StartStandby) and
// closes it in t.Cleanup, before the primary.
func NewStandby(t testing.TB, primary *Cluster, opts StandbyOptions) *Cluster {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := StartStandby(context.Background(), primary, opts)
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, c)
	return c
}

// cleanup closes c when the test ends, printing the server log's tail first if
// the test failed.
func cleanup(t testing.TB, c *Cluster) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: tail of %s:\n%s", c.LogFile(), c.logTail(40))
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
}
