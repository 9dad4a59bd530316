package relay

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/source"
)

// TestExactlyOnceCommitsMidTransaction is the stall: one PostgreSQL transaction that
// the walsender takes longer than --txn-interval to stream (an outbox row, then many
// rows of another table, then another outbox row). The Kafka transaction falls due
// in the middle of it and is committed there with a partial record — never by
// waiting on a deadline in the past (fakeStream fails the test on one).
func TestExactlyOnceCommitsMidTransaction(t *testing.T) {
	h := newHarness(t, 100)
	h.exactlyOnce(skipRule{})
	h.stream.push(relationMsg(), beginMsg(0x2000), insertMsg("e1"))
	h.until(10, "e1", func() bool { return len(h.prod.messages()) == 1 })
	h.ackAll()
	// The walsender now decodes rows the publication filters: nothing arrives.
	h.until(10, "a commit mid-transaction", func() bool { return h.prod.commits == 1 })
	rec := h.prod.records[0]
	if rec.LSN != startLSN || rec.PartialFinal != 0x2000 || rec.PartialEvents != 1 {
		t.Fatalf("record %+v, want lsn %s partial 0/2000 with 1 event", rec, startLSN)
	}
	h.stream.push(insertMsg("e2"), commitMsg(0x2000, 0x9000))
	h.until(10, "e2", func() bool { return len(h.prod.messages()) == 2 })
	h.ackAll()
	h.until(10, "the second commit", func() bool { return h.prod.commits == 2 })
	if rec := h.prod.records[1]; rec.LSN != 0x9000 || rec.PartialEvents != 0 {
		t.Fatalf("record %+v, want 0/9000 whole", rec)
	}
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != 0x9000 {
		t.Fatalf("confirmed %s, want 0/9000", got)
	}
}

// TestExactlyOnceConfirmsOnlyCommitted: acknowledged events of an open Kafka
// transaction may still be aborted, so nothing past the last commit is confirmed.
func TestExactlyOnceConfirmsOnlyCommitted(t *testing.T) {
	h := newHarness(t, 100)
	c := h.exactlyOnce(skipRule{})
	c.interval, c.linger = time.Hour, time.Hour
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "e1", func() bool { return len(h.prod.messages()) == 1 })
	h.turns(1)
	h.ackAll()
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != startLSN || h.prod.commits != 0 {
		t.Fatalf("confirmed %s with %d commits; the Kafka transaction is open", got, h.prod.commits)
	}
	if err := h.l.commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != 0x2050 {
		t.Fatalf("confirmed %s after the commit, want 0/2050", got)
	}
}

// TestExactlyOnceCommitsWhenCaughtUp: once the stream goes quiet the open Kafka
// transaction commits within the linger, not at the end of --txn-interval, so
// read_committed consumers see live events within milliseconds.
func TestExactlyOnceCommitsWhenCaughtUp(t *testing.T) {
	h := newHarness(t, 100)
	h.exactlyOnce(skipRule{})
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "e1", func() bool { return len(h.prod.messages()) == 1 })
	produced := h.clock.Now()
	h.until(10, "a commit", func() bool { return h.prod.commits == 1 })
	if d := h.clock.Now().Sub(produced); d > time.Millisecond {
		t.Fatalf("committed %s after the stream went quiet, want within the linger", d)
	}
}

// TestExactlyOnceBacklogCommitsByInterval: while messages keep coming the Kafka
// transaction grows until --txn-max-events (or --txn-interval).
func TestExactlyOnceBacklogCommitsByInterval(t *testing.T) {
	h := newHarness(t, 100000)
	c := h.exactlyOnce(skipRule{})
	c.maxEvents = 50
	h.stream.push(relationMsg())
	for i := range 120 {
		f := source.LSN(0x10000 + i*0x100)
		h.stream.push(txn(f, f+0x50, "e")...)
	}
	// Messages arrive back to back: time does not move between them.
	h.until(600, "120 events", func() bool { return len(h.prod.messages()) == 120 })
	produced := 0
	for _, e := range h.j.list() {
		switch {
		case strings.HasPrefix(e, "produce"):
			produced++
		case e == "commit" && produced < 50:
			t.Fatalf("committed after %d back-to-back events, want batches of --txn-max-events (50)", produced)
		}
	}
	if h.prod.commits < 2 {
		t.Fatalf("%d commits for 120 events with --txn-max-events 50", h.prod.commits)
	}
}

// TestExactlyOnceSkipsWhatKafkaHas: on replay, transactions the checkpoint record
// covers, and the covered events of a split one, are not produced again.
func TestExactlyOnceSkipsWhatKafkaHas(t *testing.T) {
	h := newHarness(t, 100)
	h.exactlyOnce(skipRule{Before: 0x3000, Final: 0x3000, Events: 1})
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "old")...)
	h.stream.push(txn(0x3000, 0x3050, "split-1", "split-2")...)
	h.stream.push(txn(0x4000, 0x4050, "new")...)
	h.until(40, "the uncovered events", func() bool { return len(h.prod.messages()) == 2 })
	h.turns(5)
	var ids []string
	for _, m := range h.prod.messages() {
		ids = append(ids, string(m.ID))
	}
	if !slices.Equal(ids, []string{"split-2", "new"}) {
		t.Fatalf("produced %v, want [split-2 new]", ids)
	}
}

// TestExactlyOnceCommitKeepsWalsenderAlive: a Kafka commit that takes long (Kafka
// down) keeps sending status updates; the commit's goroutine is waited for.
func TestExactlyOnceCommitKeepsWalsenderAlive(t *testing.T) {
	h := newHarness(t, 100)
	h.exactlyOnce(skipRule{})
	release := make(chan struct{})
	h.stream.sendStatus = func(source.LSN) error {
		if len(h.stream.statuses) == 3 {
			close(release)
		}
		return nil
	}
	h.prod.commit = func(context.Context) error { <-release; return nil }
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "e1", func() bool { return len(h.prod.messages()) == 1 })
	h.ackAll()
	h.until(10, "the commit", func() bool { return h.prod.commits == 1 })
	if len(h.stream.statuses) < 3 {
		t.Fatalf("%d status updates while the commit waited", len(h.stream.statuses))
	}
}

// TestExactlyOnceFlushGivesUp: when a report dooms the transaction while the
// commit waits for deliveries (the session's context ends), the commit gives up
// instead of calling CommitTransaction, which would wait out its timeout.
func TestExactlyOnceFlushGivesUp(t *testing.T) {
	h := newHarness(t, 100)
	h.exactlyOnce(skipRule{})
	ctx, cancel := context.WithCancel(context.Background())
	flushes := 0
	h.prod.flush = func() int {
		if flushes++; flushes == 3 {
			cancel() // the report goroutine failed
		}
		return 1
	}
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "e1", func() bool { return len(h.prod.messages()) == 1 })
	var err error
	for range 10 {
		if err = h.l.turn(ctx); err != nil {
			break
		}
	}
	if !errors.Is(err, source.ErrInterrupted) || h.prod.commits != 0 {
		t.Fatalf("error %v with %d commits, want an interrupted commit", err, h.prod.commits)
	}
}

// TestExactlyOnceHoldDuringBackfill: a backfill is one Kafka transaction.
func TestExactlyOnceHoldDuringBackfill(t *testing.T) {
	c := &txnCommitter{prod: &fakeProducer{j: &journal{}}, clock: newFakeClock(), interval: time.Millisecond, maxEvents: 1, linger: time.Microsecond}
	if err := c.begin(); err != nil {
		t.Fatal(err)
	}
	c.produced()
	c.hold = true
	if due, _ := c.due(c.clock.Now().Add(time.Hour), true); due {
		t.Fatal("a commit fell due while holding for a backfill")
	}
	c.hold = false
	if due, _ := c.due(c.clock.Now(), false); !due {
		t.Fatal("no commit due with --txn-max-events reached")
	}
}

// TestPlanSkip: a checkpoint record of another cluster is a gap, and with
// --accept-gap it is ignored rather than used to skip new events.
func TestPlanSkip(t *testing.T) {
	id := checkpoint.Checkpoint{Slot: "s", SystemID: "1", Database: "db"}
	rec := checkpoint.Checkpoint{Slot: "s", SystemID: "2", Database: "db", LSN: 0x9000}
	if _, err := planSkip(rec, true, id, false); err == nil {
		t.Fatal("a foreign record was trusted")
	}
	rule, err := planSkip(rec, true, id, true)
	if err != nil || rule.covers(0x100, 1) {
		t.Fatalf("--accept-gap with a foreign record: rule %+v, %v; want nothing skipped", rule, err)
	}
	rec.SystemID = "1"
	rec.PartialFinal, rec.PartialEvents = 0x9000, 3
	if rule, _ := planSkip(rec, true, id, false); rule != (skipRule{Before: 0x9000, Final: 0x9000, Events: 3}) {
		t.Fatalf("rule %+v", rule)
	}
}
