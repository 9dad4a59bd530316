package relay

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	pt "github.com/pgoutbox/pgoutbox/internal/pgoutputtest"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// TestLoopConfirmsCommitEndAfterAcks: nothing is confirmed before Kafka acked the
// transaction's event; then the commit end LSN is saved first and confirmed second.
func TestLoopConfirmsCommitEndAfterAcks(t *testing.T) {
	h := newHarness(t, 100)
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event produced", func() bool { return len(h.prod.messages()) == 1 })
	h.turns(2) // the Commit, then a timeout
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != startLSN {
		t.Fatalf("confirmed %s before the ack, want still %s", got, startLSN)
	}
	if len(h.store.saved) != 0 {
		t.Fatalf("saved %v before the ack", h.store.saved)
	}
	h.ackAll()
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != 0x2050 {
		t.Fatalf("confirmed %s after the ack, want the commit end 0/2050", got)
	}
	j := h.j.list()
	save, status := slices.Index(j, "save 0/2050"), slices.Index(j, "status 0/2050")
	if save < 0 || status < save {
		t.Fatalf("want the checkpoint saved before the confirm: %v", j)
	}
	if m := h.prod.messages()[0]; string(m.ID) != "e1" || m.Topic != "outbox.event.order" || m.Token != 0x2000 || m.Partitioned {
		t.Fatalf("produced %+v", m)
	}
}

// TestLoopOutOfOrderAcks: an ack of a later transaction confirms nothing while an
// earlier one waits.
func TestLoopOutOfOrderAcks(t *testing.T) {
	h := newHarness(t, 100)
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.stream.push(txn(0x3000, 0x3050, "e2")...)
	h.until(20, "two events", func() bool { return len(h.prod.messages()) == 2 })
	h.turns(2)
	msgs := h.prod.messages()
	if err := h.reps.handle(&sink.Report{Token: msgs[1].Token, Topic: msgs[1].Topic}); err != nil {
		t.Fatal(err)
	}
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != startLSN {
		t.Fatalf("confirmed %s with the first transaction unacked", got)
	}
	if err := h.reps.handle(&sink.Report{Token: msgs[0].Token, Topic: msgs[0].Topic}); err != nil {
		t.Fatal(err)
	}
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != 0x3050 {
		t.Fatalf("confirmed %s, want 0/3050", got)
	}
}

// TestLoopBackpressure: with the window full the loop stops reading, but keeps
// sending status updates (asking for a reply) so the walsender does not time out,
// and it reads again once acks make room. Time spent not reading is no silence of
// the server: the receive timeout does not fire.
func TestLoopBackpressure(t *testing.T) {
	h := newHarness(t, 2)
	h.l.cfg.receiveTimeout = 2 * time.Second
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1", "e2", "e3")...)
	h.until(10, "a full window", func() bool { return len(h.prod.messages()) == 2 })
	receives, statuses := h.stream.receives, len(h.stream.statuses)
	h.turns(10) // each wait lasts until the next status update
	if h.stream.receives != receives {
		t.Fatalf("the loop read %d messages while the window was full", h.stream.receives-receives)
	}
	if n := len(h.stream.statuses) - statuses; n < 5 {
		t.Fatalf("%d status updates in 10 turns of backpressure, want one per wait", n)
	}
	if !h.stream.statuses[len(h.stream.statuses)-1].reply {
		t.Fatal("a status update while not reading did not ask for a reply")
	}
	if len(h.prod.messages()) != 2 {
		t.Fatalf("produced %d events into a full window", len(h.prod.messages()))
	}
	h.ackAll()
	h.until(5, "the third event", func() bool { return len(h.prod.messages()) == 3 })
}

// TestLoopKeepalive: an idle loop confirms the server's position from a keepalive,
// at once when the server asks for a reply; with an event in flight it does not.
func TestLoopKeepalive(t *testing.T) {
	h := newHarness(t, 100)
	h.stream.script = append(h.stream.script, &source.Message{Keepalive: true, ServerWALEnd: 0x9000, ReplyRequested: true})
	h.turns(1)
	if got := h.stream.last(); got != 0x9000 {
		t.Fatalf("idle keepalive: confirmed %s, want 0/9000", got)
	}
	h.stream.push(relationMsg())
	h.stream.push(beginMsg(0xA000), insertMsg("e1"))
	h.turns(3)
	h.stream.script = append(h.stream.script, &source.Message{Keepalive: true, ServerWALEnd: 0xB000, ReplyRequested: true})
	h.turns(1)
	if got := h.stream.last(); got != 0x9000 {
		t.Fatalf("keepalive with an event in flight: confirmed %s, want still 0/9000", got)
	}
}

// TestLoopReceiveTimeout: silence from the server for longer than the receive
// timeout, although every status update asked for a reply, ends the session.
func TestLoopReceiveTimeout(t *testing.T) {
	h := newHarness(t, 100)
	h.l.cfg.receiveTimeout = 5 * time.Second
	var err error
	for range 20 {
		if err = h.l.turn(context.Background()); err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "presumed dead") {
		t.Fatalf("error %v, want the connection presumed dead", err)
	}
	if IsPermanent(err) {
		t.Fatal("a dead connection must be retried")
	}
	for _, s := range h.stream.statuses {
		if !s.reply {
			t.Fatalf("status update at %s without asking for a reply: %v", s.at, h.stream.statuses)
		}
	}
}

var errTooLarge = kafka.NewError(kafka.ErrMsgSizeTooLarge, "Broker: Message size too large", false)

// TestLoopDeadLetter: a refused event is dead-lettered by the loop under the same
// token, and its transaction is confirmed only once the dead letter is acked.
func TestLoopDeadLetter(t *testing.T) {
	h := newHarness(t, 100)
	h.l.cfg.deadLetter = true
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1", "e2")...)
	h.until(10, "two events", func() bool { return len(h.prod.messages()) == 2 })
	h.turns(2)
	msgs := h.prod.messages()
	if err := h.reps.handle(&sink.Report{Token: msgs[0].Token, Topic: msgs[0].Topic, ID: "e1", Err: errTooLarge, Key: msgs[0].Key, Value: msgs[0].Value}); err != nil {
		t.Fatal(err)
	}
	if err := h.reps.handle(&sink.Report{Token: msgs[1].Token, Topic: msgs[1].Topic}); err != nil {
		t.Fatal(err)
	}
	h.acked = 2
	h.statusDue()
	h.turns(1) // settles the refusal, then confirms
	msgs = h.prod.messages()
	if len(msgs) != 3 || !msgs[2].DeadLetter || msgs[2].Topic != "outbox.dead-letter" || msgs[2].Token != 0x2000 || string(msgs[2].ID) != "e1" {
		t.Fatalf("want a dead letter for e1 under the transaction's token, produced %+v", msgs)
	}
	if got := h.stream.last(); got != startLSN {
		t.Fatalf("confirmed %s before the dead letter was acked", got)
	}
	h.ackAll()
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != 0x2050 {
		t.Fatalf("confirmed %s after the dead letter, want 0/2050", got)
	}
}

// TestLoopFailOnRefusal: under --on-error=fail a refusal stops the loop with an
// error naming the row, and its transaction is never confirmed.
func TestLoopFailOnRefusal(t *testing.T) {
	h := newHarness(t, 100)
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event", func() bool { return len(h.prod.messages()) == 1 })
	m := h.prod.messages()[0]
	if err := h.reps.handle(&sink.Report{Token: m.Token, Topic: m.Topic, ID: "e1", Err: errTooLarge}); err != nil {
		t.Fatal(err)
	}
	err := h.l.turn(context.Background())
	var rowErr *RowFailedError
	if !errors.As(err, &rowErr) || rowErr.Row.ID != "e1" || !IsPermanent(err) {
		t.Fatalf("error %v, want a permanent RowFailedError for e1", err)
	}
	if _, err := h.led.Confirm(h.led.Safe()); err != nil || h.led.Safe() != startLSN {
		t.Fatalf("safe %s after the refusal", h.led.Safe())
	}
}

// TestLoopQueueFull: while librdkafka's queue is full the loop waits for room and
// keeps confirming, then produces the event once.
func TestLoopQueueFull(t *testing.T) {
	h := newHarness(t, 100)
	h.l.cfg.receiveTimeout = time.Second // waiting for room is not silence
	full := 600                          // 3 s of 5 ms waits
	h.prod.produce = func(*sink.Message) error {
		if full > 0 {
			full--
			return sink.ErrQueueFull
		}
		return nil
	}
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event", func() bool { return len(h.prod.messages()) == 1 })
	if n := len(h.stream.statuses); n < 2 {
		t.Fatalf("%d status updates while the queue was full for 3 s, want one a second", n)
	}
}

// TestLoopProduceErrorNeverConfirms: an event whose produce failed keeps its
// transaction from being confirmed, and no report is awaited for it (the drain does
// not wait for it).
func TestLoopProduceErrorNeverConfirms(t *testing.T) {
	h := newHarness(t, 100)
	boom := errors.New("local: broken")
	h.prod.produce = func(*sink.Message) error { return boom }
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	var err error
	for range 5 {
		if err = h.l.turn(context.Background()); err != nil {
			break
		}
	}
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want %v", err, boom)
	}
	if !h.led.Drained() {
		t.Fatal("the failed event still counts as in flight")
	}
	if err := h.l.drain(context.Background(), nil, time.Second); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if err := h.l.confirm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.stream.last(); got != startLSN {
		t.Fatalf("confirmed %s past an event never produced", got)
	}
}

// TestLoopDrain: the drain waits for the acks of what is in flight, confirming
// meanwhile, and gives up after its timeout.
func TestLoopDrain(t *testing.T) {
	h := newHarness(t, 100)
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event", func() bool { return len(h.prod.messages()) == 1 })
	err := h.l.drain(context.Background(), nil, 3*time.Second)
	if err == nil || !strings.Contains(err.Error(), "1 events still unacknowledged") {
		t.Fatalf("drain without acks: %v", err)
	}
	if len(h.stream.statuses) < 2 {
		t.Fatalf("%d status updates during a 3 s drain", len(h.stream.statuses))
	}
	h.ackAll()
	if err := h.l.drain(context.Background(), nil, 3*time.Second); err != nil {
		t.Fatalf("drain after the acks: %v", err)
	}
}

// TestLoopCheckpointSaveFails: a checkpoint that cannot be saved (a full disk)
// confirms nothing new, keeps the walsender alive, makes pgoutbox not ready, and
// confirming resumes once the save works again.
func TestLoopCheckpointSaveFails(t *testing.T) {
	h := newHarness(t, 100)
	h.l.m.Ready("streaming")
	enospc := &checkpointErr{syscall.ENOSPC}
	failing := true
	h.store.err = func() error {
		if failing {
			return enospc
		}
		return nil
	}
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event", func() bool { return len(h.prod.messages()) == 1 })
	h.turns(2)
	h.ackAll()
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != startLSN {
		t.Fatalf("confirmed %s that could not be saved", got)
	}
	if ready, reasons, _ := h.m.State(); ready || !strings.Contains(strings.Join(reasons, ";"), "no space") {
		t.Fatalf("ready %v %v while the checkpoint cannot be saved", ready, reasons)
	}
	failing = false
	h.statusDue()
	h.turns(1)
	if got := h.stream.last(); got != 0x2050 {
		t.Fatalf("confirmed %s once the save works, want 0/2050", got)
	}
	if ready, reasons, _ := h.m.State(); !ready {
		t.Fatalf("not ready after the save recovered: %v", reasons)
	}
}

type checkpointErr struct{ errno syscall.Errno }

func (e *checkpointErr) Error() string { return "write checkpoint: " + e.errno.Error() }
func (e *checkpointErr) Unwrap() error { return e.errno }

// TestLoopStaleCheckpoint: a shared store that holds a newer position (another
// instance confirmed past this one) ends the session.
func TestLoopStaleCheckpoint(t *testing.T) {
	h := newHarness(t, 100)
	h.store.err = func() error { return checkpoint.ErrStale }
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event", func() bool { return len(h.prod.messages()) == 1 })
	h.turns(2)
	h.ackAll()
	h.statusDue()
	if err := h.l.turn(context.Background()); !errors.Is(err, checkpoint.ErrStale) {
		t.Fatalf("error %v, want ErrStale", err)
	}
}

// TestLoopLeavesIsolation: once the checkpoint is past the refused batch, the
// session ends so the next one batches again.
func TestLoopLeavesIsolation(t *testing.T) {
	h := newHarness(t, 100)
	h.l.isolateUntil = 0x2000
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event", func() bool { return len(h.prod.messages()) == 1 })
	h.turns(2)
	h.ackAll()
	h.statusDue()
	if err := h.l.turn(context.Background()); !errors.Is(err, errLeaveIsolation) {
		t.Fatalf("error %v, want errLeaveIsolation", err)
	}
}

// TestLoopSkipsOtherChanges: updates, deletes and other tables produce nothing.
func TestLoopSkipsOtherChanges(t *testing.T) {
	h := newHarness(t, 100)
	h.stream.push(relationMsg(), pt.RelationMsg(pt.Relation{ID: 2, Namespace: "public", Name: "orders", ReplicaIdentity: 'd',
		Columns: []pt.Column{{Name: "id", TypeOID: 25, TypeMod: -1}}}))
	h.stream.push(beginMsg(0x2000))
	h.stream.push(pt.Insert(2, pt.Text("order-1")), pt.Update(1, 0, nil, []pt.Value{pt.Text("x"), pt.Null(), pt.Null(), pt.Null(), pt.Null()}), insertMsg("e1"), commitMsg(0x2000, 0x2050))
	h.until(10, "the event", func() bool { return len(h.prod.messages()) == 1 })
	h.turns(3)
	if n := len(h.prod.messages()); n != 1 {
		t.Fatalf("produced %d events, want only the insert", n)
	}
}

// TestLoopTransactionHeaders: with --transaction-headers every record says its
// transaction's commit LSN and xid and its 0-based place in it; events skipped as
// already in Kafka keep their place, so a replay gives the same values.
func TestLoopTransactionHeaders(t *testing.T) {
	h := newHarness(t, 100)
	h.l.cfg.txnHeaders = true
	h.exactlyOnce(skipRule{Final: 0x2000, Events: 1}) // e1 is in Kafka already
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1", "e2", "e3")...)
	h.until(10, "two events", func() bool { return len(h.prod.messages()) == 2 })
	for i, m := range h.prod.messages() {
		got := map[string]string{}
		for _, hd := range m.Headers {
			got[hd.Key] = string(hd.Value)
		}
		want := map[string]string{"pgoutbox.lsn": "0/2000", "pgoutbox.xid": "7", "pgoutbox.index": []string{"1", "2"}[i]}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("event %s: header %s = %q, want %q (headers %v)", m.ID, k, got[k], v, got)
			}
		}
	}
}
