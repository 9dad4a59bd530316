// Command devstack runs pgoutbox against a local, throwaway stack: a PostgreSQL
// server with wal_level=logical and the outbox table, and an in-process
// Kafka-protocol broker (kfake), or with -kafka real an Apache Kafka broker
// (internal/kafkareal: Java 17 and Maven). It writes demo events and prints them as an
// independent consumer receives them from Kafka. Ctrl-C stops and removes everything.
//
//	go run ./internal/devstack -pgoutbox bin/pgoutbox [-kafka real]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgoutbox/pgoutbox/internal/kafkareal"
	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	binary := flag.String("pgoutbox", "bin/pgoutbox", "pgoutbox binary to run")
	events := flag.Int("events", 0, "stop after this many demo events arrived in Kafka (0: run until Ctrl-C)")
	every := flag.Duration("every", 2*time.Second, "interval between demo events after the first batch")
	kafkaPort := flag.Int("kafka-port", 9092, "broker port on 127.0.0.1 (0 or a busy port picks a free one)")
	sqlDir := flag.String("sql", "sql", "directory with outbox.sql, publication.sql and role.sql")
	kafkaKind := flag.String("kafka", "kfake", "broker: kfake (in-process) or real (Apache Kafka; needs Java 17 and Maven)")
	flag.Parse()

	say := func(format string, args ...any) { fmt.Printf("devstack: "+format+"\n", args...) }
	// synchronous_commit on: the walsender sends only flushed WAL, and with it off a
	// commit waits for the WAL writer (up to wal_writer_delay) before it can stream.
	pg, err := pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"synchronous_commit": "on"}})
	if err != nil {
		return err
	}
	defer pg.Close()
	const db = "postgres"
	for _, f := range []string{"outbox.sql", "publication.sql", "role.sql"} {
		sql, err := os.ReadFile(filepath.Join(*sqlDir, f))
		if err != nil {
			return err
		}
		if err := pg.Exec(ctx, db, string(sql)); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	port := 0
	if *kafkaPort != 0 && portFree(*kafkaPort) {
		port = *kafkaPort
	}
	brokers, closeKafka, err := startKafka(ctx, *kafkaKind, port, say)
	if err != nil {
		return err
	}
	defer closeKafka()
	url := pg.URL("pgoutbox", db)
	say("PostgreSQL %s (superuser: %s)", url, pg.SuperURL(db))
	say("%s at %s; try: kcat -b %s -C -t outbox.event.order -f '%%k %%s\\n'", brokerName(*kafkaKind), brokers, brokers)

	dir, err := os.MkdirTemp("", "pgoutbox-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(*binary, "--postgres-url", url, "--kafka-brokers", brokers,
		"--checkpoint-file", filepath.Join(dir, "checkpoint"), "--log-format", "console",
		"--metrics-addr", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start pgoutbox (build it with 'make build'): %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopPgoutbox := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			return errors.New("pgoutbox did not stop within 40s")
		}
	}

	admin, err := pgx.Connect(ctx, pg.SuperURL(db))
	if err != nil {
		_ = stopPgoutbox()
		return err
	}
	defer admin.Close(context.Background())
	if err := waitSlot(ctx, admin, exited); err != nil {
		_ = stopPgoutbox()
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return write(gctx, admin, *every, say) })
	g.Go(func() error {
		err := consume(gctx, brokers, *events, say)
		if err == nil {
			cancel() // enough events arrived
		}
		return err
	})
	g.Go(func() error {
		select {
		case err := <-exited:
			return fmt.Errorf("pgoutbox exited: %v", err)
		case <-gctx.Done():
			return nil
		}
	})
	err = g.Wait()
	cancel()
	say("stopping pgoutbox")
	if serr := stopPgoutbox(); serr != nil && err == nil {
		err = fmt.Errorf("pgoutbox: %w", serr)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// demoTopics exist from the start, so the consumer sees the first events at once
// instead of after its next topic discovery.
var demoTopics = map[string]int{"outbox.event.order": 3, "outbox.event.customer": 3}

func brokerName(kind string) string {
	if kind == "real" {
		return "Apache Kafka broker"
	}
	return "Kafka-protocol broker (kfake)"
}

// startKafka starts the broker of kind (kfake or real) on port (0: a free one) and
// returns its bootstrap address and how to stop it.
func startKafka(ctx context.Context, kind string, port int, say func(string, ...any)) (string, func(), error) {
	switch kind {
	case "kfake":
		kopts := kafkatest.Options{Partitions: 3, AutoCreate: true, SeedTopics: map[string]int32{}}
		for t, n := range demoTopics {
			kopts.SeedTopics[t] = int32(n)
		}
		if port != 0 {
			kopts.Ports = []int{port}
		}
		kafka, err := kafkatest.Start(kopts)
		if err != nil {
			return "", nil, err
		}
		return kafkatest.Brokers(kafka), kafka.Close, nil
	case "real":
		say("starting Apache Kafka (the first run downloads its jars with Maven)")
		b, err := kafkareal.Start(ctx, kafkareal.Options{Port: port, AutoCreateTopics: true, Partitions: 3})
		if err != nil {
			return "", nil, err
		}
		if err := b.CreateTopics(ctx, demoTopics); err != nil {
			b.Close()
			return "", nil, err
		}
		return b.Brokers(), func() { b.Close() }, nil
	}
	return "", nil, fmt.Errorf("-kafka %q: want kfake or real", kind)
}

// waitSlot waits until pgoutbox streams from its slot, so demo events are not
// written before the slot exists (events before the slot are not in its stream).
func waitSlot(ctx context.Context, admin *pgx.Conn, exited <-chan error) error {
	for {
		var active bool
		err := admin.QueryRow(ctx, `SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = 'pgoutbox'`).Scan(&active)
		if err != nil {
			return err
		}
		if active {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("pgoutbox exited before streaming: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// write inserts a first batch of demo events, then one every interval.
func write(ctx context.Context, admin *pgx.Conn, every time.Duration, say func(string, ...any)) error {
	kinds := []string{"order", "customer", "order"}
	for n := 1; ; n++ {
		kind := kinds[n%len(kinds)]
		agg := fmt.Sprintf("%s-%d", kind, n%4+1)
		_, err := admin.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
			VALUES (gen_random_uuid(), $1, $2, $3, jsonb_build_object('n', $4::int, 'at', now()))`,
			kind, agg, "Demo"+kind, n)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("insert demo event: %w", err)
		}
		say("postgres → inserted event %d (%s %s)", n, kind, agg)
		wait := every
		if n < 5 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// consume prints records as they arrive; with want > 0 it returns nil once that
// many arrived.
func consume(ctx context.Context, brokers string, want int, say func(string, ...any)) error {
	c, err := kafkatest.NewConsumer(brokers, kafkatest.ConsumeOptions{TopicRegex: `^outbox\.event\.`})
	if err != nil {
		return err
	}
	defer c.Close()
	got := 0
	for {
		recs, err := c.Poll(ctx)
		for _, r := range recs {
			got++
			say("kafka ← %s key=%s id=%s value=%s (%s after commit)", r.Topic, r.Key, r.Headers["id"], r.Value,
				time.Since(r.Timestamp).Round(time.Millisecond))
		}
		if want > 0 && got >= want {
			say("%d events arrived", got)
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
