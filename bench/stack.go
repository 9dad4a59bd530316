package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

const (
	// db is the database every case uses; each case has its own cluster.
	db = "postgres"
	// role is the least-privilege role from sql/role.sql; pgoutbox and
	// pg_recvlogical both connect as it.
	role = "pgoutbox"
	// partitions per outbox topic.
	partitions = 3
)

// aggregateTypes are the outbox's aggregate types, one topic each; the
// backlog SQL and the live writers pick from the same list.
var aggregateTypes = []string{"order", "customer", "payment", "shipment", "invoice"}

// eventTypes[i] is the event type written for aggregateTypes[i].
var eventTypes = []string{"OrderCreated", "CustomerUpdated", "PaymentCaptured", "ShipmentDispatched", "InvoiceIssued"}

// pgSettings keep checkpoints out of the timed runs: a backlog of 200k events
// is a few hundred MB of WAL, and a checkpoint in the middle of a drain would
// measure the disk, not replication.
var pgSettings = map[string]string{
	"max_wal_size":       "8GB",
	"checkpoint_timeout": "30min",
}

// benchSQL creates the helpers that write realistic rows: bench_payload
// builds a ~200-byte jsonb payload for event number g, and bench_fill writes
// total events in transactions of perTx events, committing inside the
// procedure so 100k transactions cost one round trip.
const benchSQL = `
CREATE FUNCTION bench_payload(g bigint) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
    'seq', g,
    'customerId', 'cust-' || (g % 5000),
    'amount', (g % 100000) / 100.0,
    'currency', 'EUR',
    'status', 'CREATED',
    'items', jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (g % 300), 'qty', 1 + g % 5, 'price', 19.99)),
    'note', md5(g::text))
$$;

CREATE PROCEDURE bench_fill(total bigint, per_tx bigint) LANGUAGE plpgsql AS $$
DECLARE
  aggs text[] := ARRAY['order', 'customer', 'payment', 'shipment', 'invoice'];
  types text[] := ARRAY['OrderCreated', 'CustomerUpdated', 'PaymentCaptured', 'ShipmentDispatched', 'InvoiceIssued'];
  lo bigint := 1;
BEGIN
  WHILE lo <= total LOOP
    INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
    SELECT gen_random_uuid(), aggs[1 + g % 5], ((g * 7919) % 1000)::text, types[1 + g % 5], bench_payload(g)
    FROM generate_series(lo, least(lo + per_tx - 1, total)) AS g;
    COMMIT;
    lo := lo + per_tx;
  END LOOP;
END
$$;
`

// startPostgres starts a durable cluster with the outbox schema, the
// publication, the pgoutbox role and the benchmark's SQL helpers.
func startPostgres(ctx context.Context, sqlDir string) (*pgtest.Cluster, error) {
	pg, err := pgtest.Start(ctx, pgtest.Options{Durable: true, Settings: pgSettings})
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"outbox.sql", "publication.sql", "role.sql"} {
		sql, err := os.ReadFile(filepath.Join(sqlDir, f))
		if err != nil {
			pg.Close()
			return nil, fmt.Errorf("read schema: %w", err)
		}
		if err := pg.Exec(ctx, db, string(sql)); err != nil {
			pg.Close()
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	if err := pg.Exec(ctx, db, benchSQL); err != nil {
		pg.Close()
		return nil, fmt.Errorf("bench helpers: %w", err)
	}
	return pg, nil
}

// topics are the outbox topics, created up front so neither pgoutbox nor the
// consumer waits for topic discovery.
func topics() map[string]int32 {
	m := make(map[string]int32, len(aggregateTypes))
	for _, a := range aggregateTypes {
		m["outbox.event."+a] = partitions
	}
	return m
}

// startKafka starts the broker and counts the Produce requests it gets: how
// many records a request carries tells whether the producer batches.
func startKafka() (*kfake.Cluster, *produceStats, error) {
	c, err := kafkatest.Start(kafkatest.Options{Partitions: partitions, SeedTopics: topics()})
	if err != nil {
		return nil, nil, err
	}
	st := &produceStats{}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if pr, ok := req.(*kmsg.ProduceRequest); ok {
			st.observe(pr)
		}
		return nil, nil, false // observe only: kfake handles it
	})
	return c, st, nil
}

// produceStats counts Produce requests, record batches and records.
type produceStats struct {
	requests, batches, records atomic.Int64
}

// produceCount is a snapshot of produceStats.
type produceCount struct {
	requests, batches, records int64
}

func (s *produceStats) snapshot() produceCount {
	return produceCount{s.requests.Load(), s.batches.Load(), s.records.Load()}
}

func (s *produceStats) observe(req *kmsg.ProduceRequest) {
	s.requests.Add(1)
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			// Record batch v2: baseOffset int64, batchLength int32, then
			// the rest; the record count is the int32 at byte 57.
			b := p.Records
			for len(b) >= 61 {
				s.batches.Add(1)
				s.records.Add(int64(int32(binary.BigEndian.Uint32(b[57:61]))))
				n := 12 + int(int32(binary.BigEndian.Uint32(b[8:12])))
				if n <= 12 || n > len(b) {
					break
				}
				b = b[n:]
			}
		}
	}
}

func (c produceCount) String() string {
	if c.requests == 0 {
		return "no Produce requests"
	}
	return fmt.Sprintf("%d Produce requests, %d batches, %.1f records/request, %.1f records/batch",
		c.requests, c.batches, float64(c.records)/float64(c.requests), float64(c.records)/float64(max(1, c.batches)))
}

// startPgoutbox runs the pgoutbox binary against pg and kafka as the
// least-privilege role, with cfg's extra flags; its checkpoint file lives in
// dir.
func startPgoutbox(cfg config, pg *pgtest.Cluster, kafka *kfake.Cluster, dir string) (*proc, error) {
	args := []string{
		"--postgres-url", pg.URL(role, db),
		"--kafka-brokers", kafkatest.Brokers(kafka),
		"--slot", "pgoutbox",
		"--publication", "pgoutbox",
		"--checkpoint-file", filepath.Join(dir, "checkpoint"),
		"--log-format", "json",
	}
	return startProc(cfg.binary, append(args, cfg.extra...)...)
}

// waitActive waits until a client streams from slot and returns the
// walsender's pid, so the caller can follow its CPU.
func waitActive(ctx context.Context, admin *pgx.Conn, slot string, p *proc, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		var pid *int32
		err := admin.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		if err != nil && err != pgx.ErrNoRows {
			return 0, fmt.Errorf("query slot %s: %w", slot, err)
		}
		if pid != nil {
			return int(*pid), nil
		}
		if !p.running() {
			return 0, fmt.Errorf("%s exited before streaming from slot %s: %v; output tail:\n%s", p.name, slot, p.err, p.out.tail(20))
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("slot %s not active after %v; %s output tail:\n%s", slot, timeout, p.name, p.out.tail(20))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
