package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// The gap tests put the slot and the checkpoint out of step while pgoutbox is
// stopped, the way an operator or PostgreSQL could, and check that pgoutbox refuses
// to start (exit 1, a message naming the gap and --accept-gap) without touching the
// slot or the checkpoint; that `pgoutbox status` reports the gap; that one run with
// --accept-gap streams again, publishing what the slot still holds; and that the
// next normal start needs no flag.

// checkpointPath is the file e.args points pgoutbox at.
func (e *env) checkpointPath() string { return filepath.Join(e.dir, "checkpoint") }

// statusCmd runs `pgoutbox status` for e's slot and checkpoint file.
func (e *env) statusCmd() (int, string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "status", "--postgres-url", e.url(), "--slot", e.slot,
		"--checkpoint-file", e.checkpointPath())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	e.t.Fatalf("pgoutbox status: %v\n%s", err, out)
	return -1, ""
}

// wantStatus checks `pgoutbox status` exits with code and mentions every phrase.
func (e *env) wantStatus(code int, phrases ...string) {
	e.t.Helper()
	got, out := e.statusCmd()
	if got != code {
		e.t.Errorf("pgoutbox status exit code %d, want %d; output:\n%s", got, code, out)
		return
	}
	// Only the verdict and the problems count; the test's directory name is no
	// mention of anything.
	verdict := out[max(strings.LastIndex(out, "\nstatus: "), 0):]
	verdict = strings.ToLower(strings.ReplaceAll(verdict, e.dir, "DIR"))
	for _, p := range phrases {
		if !strings.Contains(verdict, strings.ToLower(p)) {
			e.t.Errorf("pgoutbox status does not mention %q:\n%s", p, out)
		}
	}
}

// slotSnapshot describes the slot's row, or "" when it does not exist.
func (e *env) slotSnapshot() string {
	e.t.Helper()
	var s string
	err := e.admin.QueryRow(context.Background(), `SELECT concat_ws(' ', plugin, restart_lsn, confirmed_flush_lsn,
			catalog_xmin, wal_status, active) FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		e.t.Fatalf("read slot: %v", err)
	}
	return s
}

// insertRange commits n events with ids uuidFor(from)..uuidFor(from+n-1) and returns
// the ids.
func (e *env) insertRange(from, n int) []string {
	e.t.Helper()
	var evs []event
	var ids []string
	for i := from; i < from+n; i++ {
		evs = append(evs, event{ID: uuidFor(i), Type: "gap", AggID: fmt.Sprintf("a%d", i%5), Kind: "T", Payload: fmt.Sprintf(`{"i":%d}`, i)})
		ids = append(ids, uuidFor(i))
	}
	e.insertTx(evs...)
	return ids
}

// waitIDs consumes until every id is in Kafka, and fails the test if one is not
// within timeout.
func (e *env) waitIDs(ids []string, timeout time.Duration) {
	e.t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	seen := 0
	e.consume(timeout, func(r []kafkatest.Record) bool {
		for _, rec := range r[seen:] {
			delete(want, string(rec.Headers["id"]))
		}
		seen = len(r)
		return len(want) == 0
	})
	if len(want) > 0 {
		var missing []string
		for id := range want {
			missing = append(missing, id)
		}
		e.t.Fatalf("%d of %d events not published, e.g. %v", len(missing), len(ids), missing[:min(3, len(missing))])
	}
}

// stopClean sends SIGTERM and expects a clean exit and an inactive slot.
func (e *env) stopClean(p *proc) {
	e.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		e.t.Fatalf("exit code %d after SIGTERM; output:\n%s", code, tail(p.out.String(), 30))
	}
	e.waitInactive(10 * time.Second)
}

// publishRun starts pgoutbox with extra flags, publishes n new events from id from,
// and stops it cleanly.
func (e *env) publishRun(from, n int, extra ...string) *proc {
	e.t.Helper()
	p := e.start(extra...)
	p.waitLog(`"streaming"`, 30*time.Second)
	e.waitIDs(e.insertRange(from, n), 30*time.Second)
	e.stopClean(p)
	return p
}

// refuses runs pgoutbox, expects it to refuse with a gap error mentioning reason,
// and checks that neither the slot nor the checkpoint file changed.
func (e *env) refuses(reason string) {
	e.t.Helper()
	slotBefore := e.slotSnapshot()
	cpBefore, err := os.ReadFile(e.checkpointPath())
	if err != nil {
		e.t.Fatal(err)
	}
	code, out := e.run(60 * time.Second)
	if code != 1 {
		e.t.Errorf("exit code %d, want 1 (refuse to start); output:\n%s", code, tail(out, 30))
	}
	for _, want := range []string{"--accept-gap", reason} {
		if !strings.Contains(out, want) {
			e.t.Errorf("output does not mention %q:\n%s", want, tail(out, 30))
		}
	}
	if !strings.Contains(strings.ReplaceAll(strings.ReplaceAll(out, e.dir, "DIR"), "--accept-gap", ""), "gap between") {
		e.t.Errorf("output does not call it a gap:\n%s", tail(out, 30))
	}
	if strings.Contains(out, `"streaming"`) {
		e.t.Errorf("pgoutbox streamed despite the gap:\n%s", tail(out, 30))
	}
	if after := e.slotSnapshot(); after != slotBefore {
		e.t.Errorf("refusing pgoutbox touched the slot: before %q, after %q", slotBefore, after)
	}
	cpAfter, err := os.ReadFile(e.checkpointPath())
	if err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Equal(cpBefore, cpAfter) {
		e.t.Errorf("refusing pgoutbox rewrote the checkpoint:\nbefore %s\nafter  %s", cpBefore, cpAfter)
	}
}

// recovers runs pgoutbox once with --accept-gap, expecting the events in pending
// (committed after the slot's current position) and new ones to be published, then
// once more without the flag.
func (e *env) recovers(pending []string, from int) {
	e.t.Helper()
	p := e.start("--accept-gap")
	p.waitLog(`"streaming"`, 30*time.Second)
	ids := append(pending, e.insertRange(from, 10)...)
	e.waitIDs(ids, 30*time.Second)
	e.stopClean(p)
	e.wantStatus(0, "status: ok")

	p = e.publishRun(from+10, 10)
	if strings.Contains(strings.ReplaceAll(p.out.String(), e.dir, "DIR"), "gap between") {
		e.t.Errorf("normal restart after --accept-gap still reports a gap:\n%s", tail(p.out.String(), 20))
	}
	e.wantStatus(0, "status: ok")
}

// TestGapSlotDropped: the slot is dropped while pgoutbox is stopped.
func TestGapSlotDropped(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.publishRun(0, 10)
	e.wantStatus(0, "status: ok")

	e.exec(`SELECT pg_drop_replication_slot($1)`, e.slot)
	e.insertRange(100, 5) // committed while no slot exists: in the gap
	e.wantStatus(1, "gap", "does not exist")
	e.refuses("does not exist")
	if s := e.slotSnapshot(); s != "" {
		t.Fatalf("refusing pgoutbox created the slot: %s", s)
	}
	e.recovers(nil, 200)
}

// TestGapSlotRecreated: the slot is dropped and created again, so it starts past the
// checkpoint.
func TestGapSlotRecreated(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.publishRun(0, 10)

	e.exec(`SELECT pg_drop_replication_slot($1)`, e.slot)
	e.insertRange(100, 5) // in the gap
	e.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, e.slot)
	pending := e.insertRange(150, 5) // after the new slot's start: the slot has them
	e.wantStatus(1, "gap")
	e.refuses("re-created")
	e.recovers(pending, 200)
}

// TestGapOtherSlot: the checkpoint file was written for slot A and pgoutbox is
// pointed at an existing slot B with the same file. B may be newer than the
// checkpoint, or older: then the checkpoint's LSN is ahead of B, and starting from
// it would skip what only B holds.
func TestGapOtherSlot(t *testing.T) {
	for _, older := range []bool{false, true} {
		name := "newer"
		if older {
			name = "older"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			b := *e
			b.slot = e.slot + "_b"
			t.Cleanup(func() {
				if e.pg.Running() {
					_ = e.pg.Exec(context.Background(), "postgres",
						`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, b.slot)
				}
			})
			var pending []string
			if older {
				b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
				pending = b.insertRange(50, 5) // only B holds these: A does not exist yet
			}
			e.publishRun(0, 10)
			if !older {
				b.exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, b.slot)
				pending = b.insertRange(150, 5)
			}
			b.wantStatus(1, "gap", "belongs to slot")
			b.refuses("belongs to slot")
			b.recovers(pending, 200)
		})
	}
}

// TestGapOtherCluster: the checkpoint file comes from a run against another
// PostgreSQL cluster with the same slot name. The foreign checkpoint's LSN is made
// larger than this slot's position, so neither a refusal nor `status` can get the
// gap right by comparing LSNs alone, and --accept-gap must not start from it.
func TestGapOtherCluster(t *testing.T) {
	e := newEnv(t, envOptions{cluster: ownCluster(t, nil)})
	other := newEnv(t, envOptions{}) // the shared cluster has written more WAL
	e.slot = other.slot              // same slot name on both clusters
	e.publishRun(0, 10)
	pending := e.insertRange(150, 5) // committed while stopped: the slot has them

	var here string
	if err := e.admin.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&here); err != nil {
		t.Fatal(err)
	}
	for { // usually no round: move the other cluster's WAL past this one's
		var ahead bool
		if err := other.admin.QueryRow(context.Background(), `SELECT pg_current_wal_lsn() > $1::pg_lsn`, here).Scan(&ahead); err != nil {
			t.Fatal(err)
		}
		if ahead {
			break
		}
		other.exec(`CREATE TABLE IF NOT EXISTS filler (x text); INSERT INTO filler SELECT repeat('x', 100)`)
		other.exec(`SELECT pg_switch_wal()`)
	}
	other.publishRun(0, 3)
	foreign, err := os.ReadFile(other.checkpointPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.checkpointPath(), foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	e.wantStatus(1, "another PostgreSQL cluster", "gap")
	e.refuses("another PostgreSQL cluster")
	e.recovers(pending, 200)
}

// TestGapWALLost: with max_slot_wal_keep_size, PostgreSQL removes WAL the stopped
// slot still needs and marks it lost.
func TestGapWALLost(t *testing.T) {
	c := ownCluster(t, map[string]string{"max_slot_wal_keep_size": "1MB", "min_wal_size": "32MB", "max_wal_size": "64MB"})
	e := newEnv(t, envOptions{cluster: c})
	e.publishRun(0, 10)
	e.wantStatus(0, "status: ok")

	e.insertRange(100, 5) // needs the WAL about to be removed
	e.exec(`CREATE TABLE filler (x text)`)
	walStatus := ""
	for i := 0; i < 20 && walStatus != "lost"; i++ {
		e.exec(`INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)`)
		e.exec(`SELECT pg_switch_wal()`)
		e.exec(`CHECKPOINT`)
		if err := e.admin.QueryRow(context.Background(), `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&walStatus); err != nil {
			t.Fatal(err)
		}
	}
	if walStatus != "lost" {
		t.Fatalf("slot wal_status %q after generating WAL, want lost", walStatus)
	}
	e.wantStatus(1, "lost", "gap")
	e.refuses("lost")
	e.recovers(nil, 200)
}
