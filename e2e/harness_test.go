// Package e2e runs the pgoutbox binary against a real PostgreSQL and an in-process
// Kafka-protocol broker (kfake), and checks what reaches Kafka with an independent
// consumer (franz-go), never with pgoutbox's own code.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

var (
	binary string          // the pgoutbox binary under test
	shared *pgtest.Cluster // one server for the tests that do not restart it
	dbSeq  atomic.Int64
	// procSeq numbers pgoutbox runs; with E2E_LOG_DIR set, each run's output is
	// kept there under the test's name and this number.
	procSeq atomic.Int64
)

// role is the least-privilege role from sql/role.sql that pgoutbox runs as.
const role = "pgoutbox"

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if err := pgtest.Available(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "e2e: PostgreSQL server binaries are required in CI: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: skipping, PostgreSQL server binaries not found: %v\n", err)
		return 0
	}
	dir, err := os.MkdirTemp("", "pgoutbox-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "pgoutbox")
	args := []string{"build", "-o", binary}
	if os.Getenv("E2E_RACE") != "" {
		args = append(args, "-race") // a pgoutbox that reports its data races
	}
	build := exec.Command("go", append(args, ".")...)
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build pgoutbox: %v\n", err)
		return 1
	}
	ctx := context.Background()
	shared, err = pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"max_replication_slots": "64", "max_wal_senders": "64"}})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start PostgreSQL: %v\n", err)
		return 1
	}
	defer shared.Close()
	return m.Run()
}

// env is one test's world: a database with the outbox table and publication, a
// Kafka-protocol broker, and a directory for pgoutbox's checkpoint.
type env struct {
	t       *testing.T
	pg      *pgtest.Cluster
	db      string
	slot    string
	kafka   *kfake.Cluster
	brokers string
	dir     string
	admin   *pgx.Conn
	// readCommitted makes the test's consumer hide open and aborted transactions,
	// as exactly-once consumers must.
	readCommitted bool
}

type envOptions struct {
	cluster *pgtest.Cluster // nil: the shared one
	kafka   kafkatest.Options
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	c := o.cluster
	if c == nil {
		c = shared
	}
	n := dbSeq.Add(1)
	e := &env{t: t, pg: c, db: fmt.Sprintf("e2e_%d", n), slot: fmt.Sprintf("slot_%d", n), dir: t.TempDir()}
	if err := c.CreateDatabase(ctx, e.db); err != nil {
		t.Fatalf("create database: %v", err)
	}
	// As an administrator would: the table, the publication (by the table owner), and
	// the least-privilege role pgoutbox runs as.
	for _, file := range []string{"../sql/outbox.sql", "../sql/publication.sql", "../sql/role.sql"} {
		sql, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, e.db, string(sql)); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	admin, err := pgx.Connect(ctx, c.SuperURL(e.db))
	if err != nil {
		t.Fatal(err)
	}
	e.admin = admin
	e.kafka = kafkatest.New(t, o.kafka)
	e.brokers = kafkatest.Brokers(e.kafka)
	t.Cleanup(func() {
		admin.Close(context.Background())
		// Drop the slot so the shared server does not keep its WAL.
		if c.Running() {
			_ = c.Exec(context.Background(), "postgres",
				`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, e.slot)
		}
	})
	return e
}

// url is the connection URL pgoutbox uses: the least-privilege role.
func (e *env) url() string { return e.pg.URL(role, e.db) }

// args are the flags every run gets.
func (e *env) args(extra ...string) []string {
	return append([]string{
		"--postgres-url", e.url(),
		"--kafka-brokers", e.brokers,
		"--slot", e.slot,
		"--checkpoint-file", filepath.Join(e.dir, "checkpoint"),
		"--status-interval", "200ms",
		"--log-level", "debug",
	}, extra...)
}

// proc is a running pgoutbox.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs pgoutbox with e's flags plus extra.
func (e *env) start(extra ...string) *proc {
	return e.startEnv(nil, extra...)
}

func (e *env) startEnv(environ []string, extra ...string) *proc {
	e.t.Helper()
	return e.startArgs(environ, e.args(extra...))
}

// startArgs starts pgoutbox with exactly args, without the env's own flags.
func (e *env) startArgs(environ []string, args []string) *proc {
	e.t.Helper()
	p := &proc{t: e.t, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), environ...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("start pgoutbox: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	seq := procSeq.Add(1)
	e.t.Cleanup(func() {
		p.kill()
		if dir := os.Getenv("E2E_LOG_DIR"); dir != "" {
			name := fmt.Sprintf("%s-%03d.log", strings.ReplaceAll(e.t.Name(), "/", "_"), seq)
			_ = os.WriteFile(filepath.Join(dir, name), []byte(p.out.String()), 0o644)
		}
		if out := p.out.String(); strings.Contains(out, "WARNING: DATA RACE") {
			e.t.Errorf("the race detector found a data race in pgoutbox:\n%s", out[strings.Index(out, "WARNING: DATA RACE"):])
		}
		if e.t.Failed() {
			e.t.Logf("pgoutbox output:\n%s", tail(p.out.String(), 60))
		}
	})
	return p
}

// run runs pgoutbox to completion and returns its exit code and output.
func (e *env) run(timeout time.Duration, extra ...string) (int, string) {
	e.t.Helper()
	p := e.start(extra...)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		e.t.Fatalf("pgoutbox did not exit within %s; output:\n%s", timeout, tail(p.out.String(), 40))
	}
	return p.exitCode(), p.out.String()
}

func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// mustBeRunning fails the test if pgoutbox exited; when is what it must survive.
func (p *proc) mustBeRunning(when string) {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("pgoutbox exited %s: %v", when, p.err)
	default:
	}
}

// wait waits for exit and returns the exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		p.t.Fatalf("pgoutbox did not exit within %s; output:\n%s", timeout, tail(p.out.String(), 40))
	}
	return p.exitCode()
}

func (p *proc) exitCode() int {
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

// waitLog waits until the output contains s.
func (p *proc) waitLog(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), s) {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("pgoutbox exited (%v) before logging %q; output:\n%s", p.err, s, tail(p.out.String(), 40))
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("pgoutbox did not log %q within %s; output:\n%s", s, timeout, tail(p.out.String(), 40))
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// exec runs SQL as the superuser in e's database.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.admin.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// event is one outbox row as a test writes it.
type event struct {
	ID, Type, AggID, Kind string
	Payload               string
}

// insertTx inserts events in one transaction and returns them.
func (e *env) insertTx(events ...event) {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range events {
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`,
			ev.ID, ev.Type, ev.AggID, ev.Kind, ev.Payload); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// consume reads every outbox.event.* topic until until reports true or timeout.
func (e *env) consume(timeout time.Duration, until func([]kafkatest.Record) bool) []kafkatest.Record {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	recs, err := kafkatest.Consume(ctx, e.brokers, kafkatest.ConsumeOptions{TopicRegex: `^outbox\.event\.`, Until: until, ReadCommitted: e.readCommitted})
	if err != nil && ctx.Err() == nil {
		e.t.Fatalf("consume: %v", err)
	}
	return recs
}

// consumeN reads until n distinct events (by header id) arrived; it fails the test
// after timeout.
func (e *env) consumeN(n int, timeout time.Duration) []kafkatest.Record {
	e.t.Helper()
	ids := map[string]bool{}
	seen := 0
	recs := e.consume(timeout, func(r []kafkatest.Record) bool {
		for _, rec := range r[seen:] {
			ids[string(rec.Headers["id"])] = true
		}
		seen = len(r)
		return len(ids) >= n
	})
	if len(ids) < n {
		e.t.Fatalf("consumed %d distinct events (%d records), want %d", len(ids), len(recs), n)
	}
	return recs
}

// slotState reads the slot's confirmed position and activity.
func (e *env) slotConfirmed() (confirmed string, active bool) {
	e.t.Helper()
	err := e.admin.QueryRow(context.Background(),
		`SELECT coalesce(confirmed_flush_lsn::text, ''), active FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&confirmed, &active)
	if err != nil {
		e.t.Fatalf("read slot: %v", err)
	}
	return confirmed, active
}

func uuidFor(i int) string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
}
