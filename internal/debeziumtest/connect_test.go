package debeziumtest

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkareal"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

// TestConnect runs Debezium's connector with the Event Router on an outbox row and
// reads the record it routed, then checks that Close leaves no process behind.
func TestConnect(t *testing.T) {
	kafkareal.Require(t)
	pg := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	if err := pg.Exec(ctx, "postgres", `CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL,
		aggregateid text NOT NULL, type text NOT NULL, payload jsonb)`); err != nil {
		t.Fatal(err)
	}
	b := kafkareal.New(t, kafkareal.Options{})
	if err := b.CreateTopic(ctx, "outbox.event.order", 3, nil); err != nil {
		t.Fatal(err)
	}
	c := New(t, Options{Brokers: b.Brokers(), PGHost: "127.0.0.1", PGPort: pg.Port, PGUser: "postgres",
		PGDatabase: "postgres", Slot: "dbz", Publication: "dbz"})
	waitSlot(t, pg, "dbz")
	if err := pg.Exec(ctx, "postgres", `INSERT INTO outbox VALUES ('00000000-0000-4000-8000-000000000001', 'order', '42', 'OrderPaid', '{"a": 1}')`); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Brokers()), kgo.ConsumeTopics("outbox.event.order"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) == 0 && cctx.Err() == nil {
		f := cl.PollFetches(cctx)
		got = append(got, f.Records()...)
	}
	if len(got) != 1 {
		t.Fatalf("read %d records, want 1", len(got))
	}
	r := got[0]
	hdr := map[string]string{}
	for _, h := range r.Headers {
		hdr[h.Key] = string(h.Value)
	}
	t.Logf("key %q value %q headers %q", r.Key, r.Value, hdr)
	if string(r.Key) != "42" || string(r.Value) != `{"a": 1}` || hdr["id"] != "00000000-0000-4000-8000-000000000001" {
		t.Errorf("record: key %q value %q id %q", r.Key, r.Value, hdr["id"])
	}
	pid := c.Pid()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Connect process %d still there after Close: %v", pid, err)
	}
}

// waitSlot waits until a walsender streams from slot.
func waitSlot(t *testing.T, pg *pgtest.Cluster, slot string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		err := pg.Exec(context.Background(), "postgres",
			`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '`+slot+`' AND active) THEN RAISE 'no'; END IF; END $$`)
		if err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("slot %s not active within 60s", slot)
}
