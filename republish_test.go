package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/source"
)

// TestRepublishUsage: republish needs a condition, a broker, a positive batch and a
// mapping that validates; its --help lists what it reads and not the relay's
// replication flags.
func TestRepublishUsage(t *testing.T) {
	base := []string{"republish", "--postgres-url", "postgres://app@127.0.0.1:1/orders", "--kafka-brokers", "127.0.0.1:1"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no where", base, "--where is required"},
		{"blank where", with("--where", "  "), "--where is required"},
		{"zero batch", with("--where", "true", "--batch", "0"), "--batch 0"},
		{"no brokers", []string{"republish", "--postgres-url", "postgres://h/db", "--where", "true"}, "--kafka-brokers is required"},
		{"no postgres", []string{"republish", "--kafka-brokers", "k:1", "--where", "true"}, "--postgres-url is required"},
		{"relay flag", with("--where", "true", "--slot", "s"), "flag provided but not defined: -slot"},
		{"weak kafka property", with("--where", "true", "--kafka-config", "acks=1"), "acks=1"},
		{"bad table", with("--where", "true", "--table", "a.b.c"), "want schema.table"},
	} {
		t.Run(c.name, func(t *testing.T) {
			setEnv(t, env{})
			code, _, stderr := runMain(t, c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, c.want)
			}
		})
	}
	setEnv(t, env{})
	code, stdout, _ := runMain(t, "republish", "--help")
	if code != 0 || !strings.HasPrefix(stdout, "pgoutbox republish reads the outbox rows") {
		t.Fatalf("republish --help: exit %d\n%s", code, stdout)
	}
	for _, want := range []string{"  --where condition\n", "  --order-by column\n", "  --batch int\n", "  --resume\n", "  --resume-file path\n",
		"  --kafka-brokers servers\n", "  --topic template\n", "  --header-column", "env: PGOUTBOX_WHERE\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("republish --help lacks %q", want)
		}
	}
	for _, not := range []string{"--slot", "--publication", "--on-error", "--exactly-once", "--metrics-addr", "--backfill"} {
		if strings.Contains(stdout, not) {
			t.Errorf("republish --help lists %s, which republish does not read", not)
		}
	}
}

// TestRepublishDefaults: the order defaults to the id column, the state file sits
// next to the checkpoint, and the environment fills the flags.
func TestRepublishDefaults(t *testing.T) {
	f := newRepublishFlags()
	e := env{"PGOUTBOX_POSTGRES_URL": "postgres://h/db", "PGOUTBOX_KAFKA_BROKERS": "k:1", "PGOUTBOX_WHERE": "type = 'x'",
		"PGOUTBOX_CHECKPOINT_FILE": "/var/lib/pgoutbox/pgoutbox.checkpoint", "PGOUTBOX_ID_COLUMN": "event_id", "PGOUTBOX_SLOT": "ignored"}
	if err := f.parse(nil, e.get); err != nil {
		t.Fatal(err)
	}
	o, err := f.build()
	if err != nil {
		t.Fatal(err)
	}
	want := source.Republish{Table: "public.outbox", Where: "type = 'x'", Order: "event_id", ID: "event_id", Batch: 1000}
	if o.spec != want || o.stateFile != "/var/lib/pgoutbox/pgoutbox.checkpoint.republish" || o.kafka.Brokers != "k:1" {
		t.Errorf("spec %+v state %q brokers %q", o.spec, o.stateFile, o.kafka.Brokers)
	}
	if !strings.Contains(o.spec.PageQuery(source.Position{}), `ORDER BY "event_id", "event_id" LIMIT 1000`) {
		t.Errorf("first page: %s", o.spec.PageQuery(source.Position{}))
	}
	q := o.spec.PageQuery(source.Position{Order: "a", ID: "b", Set: true})
	if q != `SELECT * FROM "public"."outbox" WHERE (type = 'x') AND ("event_id", "event_id") > ($1, $2) ORDER BY "event_id", "event_id" LIMIT 1000` {
		t.Errorf("next page: %s", q)
	}
}

// TestRepublishState: the state round-trips through its file, written without a
// temporary left behind; --resume refuses another republish's state, and a new run
// refuses to overwrite an unfinished one.
func TestRepublishState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	o := &republishOptions{spec: source.Republish{Table: "public.outbox", Where: "true", Order: "id", ID: "id", Batch: 10}, stateFile: path, resume: true}
	st, err := startState(o)
	if err != nil || st.Rows != 0 || st.Where != "true" {
		t.Fatalf("--resume without a state: %+v, %v; want a fresh start", st, err)
	}
	o.resume = false
	st.After = source.Position{Order: "o", ID: "i", Set: true}
	st.Rows = 20
	if err := saveState(path, &st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
	var usage *usageError
	if _, err := startState(o); !errors.As(err, &usage) || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("new run over an unfinished state: %v", err)
	}
	o.resume = true
	got, err := startState(o)
	if err != nil || got.After != st.After || got.Rows != 20 {
		t.Errorf("resumed %+v, %v", got, err)
	}
	other := *o
	other.spec.Where = "false"
	if _, err := startState(&other); !errors.As(err, &usage) {
		t.Errorf("resume with another --where: %v", err)
	}
	st.Done = true
	if err := saveState(path, &st); err != nil {
		t.Fatal(err)
	}
	o.resume = false
	if got, err := startState(o); err != nil || got.Rows != 0 {
		t.Errorf("new run after a finished one: %+v, %v", got, err)
	}
}

func TestBarLine(t *testing.T) {
	for _, c := range []struct {
		done, total int64
		want        string
	}{
		{0, 100, "[..........]   0%  0/100 rows"},
		{50, 100, "[#####.....]  50%  50/100 rows"},
		{100, 100, "[##########] 100%  100/100 rows"},
		{0, 0, "[##########] 100%  0/0 rows"},
	} {
		if got := barLine(c.done, c.total, 10); got != c.want {
			t.Errorf("barLine(%d, %d) = %q, want %q", c.done, c.total, got, c.want)
		}
	}
}
