package ledger

import (
	"errors"
	"testing"
	"time"
)

// must fails the test on an unexpected error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// add calls Add and fails the test on error.
func add(t *testing.T, tr *Ledger) LSN {
	t.Helper()
	tok, err := tr.Add()
	must(t, err)
	return tok
}

// wantErr fails the test unless err wraps target.
func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

// wantSafe fails the test unless Safe returns want.
func wantSafe(t *testing.T, tr *Ledger, want LSN) {
	t.Helper()
	if got := tr.Safe(); got != want {
		t.Fatalf("Safe() = %s, want %s", got, want)
	}
}

func TestNewPanicsOnBadLimits(t *testing.T) {
	for _, c := range []struct{ events, txns int }{{0, 1}, {1, 0}, {-1, 5}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%d, %d) did not panic", c.events, c.txns)
				}
			}()
			New(c.events, c.txns)
		}()
	}
}

func TestNewIsIdle(t *testing.T) {
	tr := New(10, 10)
	wantSafe(t, tr, 0)
	if !tr.Idle() || tr.Full() || tr.InFlight() != 0 {
		t.Fatalf("new tracker: idle %v full %v inflight %d", tr.Idle(), tr.Full(), tr.InFlight())
	}
	if _, ok := tr.Open(); ok {
		t.Fatal("new tracker has an open transaction")
	}
}

func TestBegin(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	if final, ok := tr.Open(); !ok || final != 100 {
		t.Fatalf("Open() = %s, %v, want 100, true", final, ok)
	}
	if tr.Idle() {
		t.Fatal("idle with an open transaction")
	}
}

func TestBeginWhileOpen(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	wantErr(t, tr.Begin(200, time.Time{}), ErrOpen)
	if final, _ := tr.Open(); final != 100 {
		t.Fatalf("failed Begin replaced the open transaction: %s", final)
	}
}

func TestBeginZero(t *testing.T) {
	tr := New(10, 10)
	wantErr(t, tr.Begin(0, time.Time{}), ErrOrder)
	if !tr.Idle() {
		t.Fatal("failed Begin left a transaction behind")
	}
}

func TestBeginOrder(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Commit(200))
	for _, final := range []LSN{100, 150, 199} {
		wantErr(t, tr.Begin(final, time.Time{}), ErrOrder)
	}
	// The next commit record may start right where the previous one ended.
	must(t, tr.Begin(200, time.Time{}))
}

func TestBeginBeforeSafe(t *testing.T) {
	tr := New(10, 10)
	if !tr.Advance(500) {
		t.Fatal("Advance on an idle tracker did not move")
	}
	wantErr(t, tr.Begin(499, time.Time{}), ErrOrder)
	must(t, tr.Begin(500, time.Time{}))
}

func TestAdd(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	for i := 1; i <= 3; i++ {
		if tok := add(t, tr); tok != 100 {
			t.Fatalf("Add() = %s, want token 100", tok)
		}
		if tr.InFlight() != i {
			t.Fatalf("InFlight() = %d, want %d", tr.InFlight(), i)
		}
	}
}

func TestAddWithoutTransaction(t *testing.T) {
	tr := New(10, 10)
	_, err := tr.Add()
	wantErr(t, err, ErrNotOpen)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Commit(200))
	_, err = tr.Add()
	wantErr(t, err, ErrNotOpen)
	if tr.InFlight() != 0 {
		t.Fatalf("failed Add counted an event: %d", tr.InFlight())
	}
}

func TestAddWhenFull(t *testing.T) {
	tr := New(2, 10)
	must(t, tr.Begin(100, time.Time{}))
	add(t, tr)
	add(t, tr)
	if !tr.Full() {
		t.Fatal("not Full with maxEvents in flight")
	}
	// A transaction larger than maxEvents must still be able to stream.
	add(t, tr)
	if tr.InFlight() != 3 {
		t.Fatalf("InFlight() = %d, want 3", tr.InFlight())
	}
}

func TestCommit(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	tok := add(t, tr)
	must(t, tr.Commit(200))
	if _, ok := tr.Open(); ok {
		t.Fatal("transaction still open after Commit")
	}
	wantSafe(t, tr, 0)
	must(t, tr.Done(tok))
	wantSafe(t, tr, 200)
}

func TestCommitWithoutTransaction(t *testing.T) {
	tr := New(10, 10)
	wantErr(t, tr.Commit(200), ErrNotOpen)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Commit(200))
	wantErr(t, tr.Commit(300), ErrNotOpen)
	wantSafe(t, tr, 200)
}

func TestCommitNotAfterFinal(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	// CommitMessage.CommitLSN equals the final LSN: confirming it replays
	// the transaction, so it must not be taken for the end LSN.
	wantErr(t, tr.Commit(100), ErrOrder)
	wantErr(t, tr.Commit(99), ErrOrder)
	if _, ok := tr.Open(); !ok {
		t.Fatal("failed Commit closed the transaction")
	}
	must(t, tr.Commit(101))
	wantSafe(t, tr, 101)
}

func TestZeroEventTransactions(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Commit(110))
	wantSafe(t, tr, 110)

	// Behind a transaction with an event in flight, an empty one waits.
	must(t, tr.Begin(120, time.Time{}))
	tok := add(t, tr)
	must(t, tr.Commit(130))
	must(t, tr.Begin(140, time.Time{}))
	must(t, tr.Commit(150))
	wantSafe(t, tr, 110)
	must(t, tr.Done(tok))
	wantSafe(t, tr, 150)
	if !tr.Idle() {
		t.Fatal("not idle after everything was acked")
	}
}

func TestDoneOutOfOrder(t *testing.T) {
	tr := New(100, 100)
	must(t, tr.Begin(100, time.Time{}))
	t1a, t1b := add(t, tr), add(t, tr)
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	t2 := add(t, tr)
	must(t, tr.Commit(400))
	must(t, tr.Begin(500, time.Time{}))
	t3 := add(t, tr)
	must(t, tr.Commit(600))

	// The newest transactions are acked first: nothing is safe yet.
	must(t, tr.Done(t3))
	must(t, tr.Done(t2))
	wantSafe(t, tr, 0)
	must(t, tr.Done(t1b))
	wantSafe(t, tr, 0)
	// The last ack of the oldest transaction releases all three at once.
	must(t, tr.Done(t1a))
	wantSafe(t, tr, 600)
	if !tr.Idle() || tr.InFlight() != 0 {
		t.Fatalf("idle %v inflight %d, want idle and 0", tr.Idle(), tr.InFlight())
	}
}

func TestDoneBeforeCommit(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Done(add(t, tr)))
	wantSafe(t, tr, 0)
	if tr.Idle() {
		t.Fatal("idle with an open transaction")
	}
	must(t, tr.Done(add(t, tr)))
	must(t, tr.Commit(200))
	wantSafe(t, tr, 200)
}

func TestDoneUnknownToken(t *testing.T) {
	tr := New(10, 10)
	wantErr(t, tr.Done(100), ErrUnknownToken)
	must(t, tr.Begin(100, time.Time{}))
	tok := add(t, tr)
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	add(t, tr)
	must(t, tr.Commit(400))
	for _, tok := range []LSN{50, 150, 200, 350, 500} {
		wantErr(t, tr.Done(tok), ErrUnknownToken)
	}
	// A transaction that became safe is gone; its tokens are unknown.
	must(t, tr.Done(tok))
	wantSafe(t, tr, 200)
	wantErr(t, tr.Done(tok), ErrUnknownToken)
	if tr.InFlight() != 1 {
		t.Fatalf("InFlight() = %d, want 1", tr.InFlight())
	}
}

func TestDoneDoubleAck(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	t1 := add(t, tr)
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	t2 := add(t, tr)
	must(t, tr.Done(t2))
	// The open transaction has nothing in flight.
	wantErr(t, tr.Done(t2), ErrDoubleAck)
	must(t, tr.Commit(400))
	// The committed one waits behind t1 with nothing in flight.
	wantErr(t, tr.Done(t2), ErrDoubleAck)
	if tr.InFlight() != 1 {
		t.Fatalf("double ack changed InFlight to %d", tr.InFlight())
	}
	must(t, tr.Done(t1))
	wantSafe(t, tr, 400)
}

func TestDoneBinarySearch(t *testing.T) {
	tr := New(1000, 1000)
	var toks []LSN
	for i := range 50 {
		final := LSN(10 + 10*i)
		must(t, tr.Begin(final, time.Time{}))
		toks = append(toks, add(t, tr))
		must(t, tr.Commit(final+5))
	}
	// Ack every transaction but the head, from the middle outwards.
	must(t, tr.Done(toks[25]))
	for i := 24; i > 0; i-- {
		must(t, tr.Done(toks[i]))
		must(t, tr.Done(toks[50-i]))
	}
	wantSafe(t, tr, 0)
	if tr.InFlight() != 1 {
		t.Fatalf("InFlight() = %d, want 1", tr.InFlight())
	}
	must(t, tr.Done(toks[0]))
	wantSafe(t, tr, 10+10*49+5)
}

func TestSafeMonotonic(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Commit(200))
	wantSafe(t, tr, 200)
	wantSafe(t, tr, 200) // Safe is a read and can be called again.
	if tr.Advance(150) {
		t.Fatal("Advance moved the safe position backwards")
	}
	wantSafe(t, tr, 200)
}

func TestAdvance(t *testing.T) {
	tr := New(10, 10)
	if !tr.Advance(50) {
		t.Fatal("Advance on a new tracker did not move")
	}
	wantSafe(t, tr, 50)
	if tr.Advance(50) || tr.Advance(40) {
		t.Fatal("Advance moved to a position not ahead of safe")
	}

	must(t, tr.Begin(100, time.Time{}))
	if tr.Advance(1000) {
		t.Fatal("Advance moved with an open transaction")
	}
	tok := add(t, tr)
	must(t, tr.Commit(200))
	if tr.Advance(1000) {
		t.Fatal("Advance moved with an event in flight")
	}
	must(t, tr.Begin(300, time.Time{}))
	must(t, tr.Commit(400))
	must(t, tr.Done(tok))
	wantSafe(t, tr, 400)
	if !tr.Advance(1000) {
		t.Fatal("Advance did not move once idle")
	}
	wantSafe(t, tr, 1000)
}

func TestAdvanceWithCommittedWaiting(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	tok := add(t, tr)
	must(t, tr.Done(tok))
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	tok = add(t, tr)
	must(t, tr.Commit(400))
	must(t, tr.Begin(500, time.Time{}))
	must(t, tr.Commit(600))
	// 600 is committed and acked but waits for 300..400: not idle.
	if tr.Idle() || tr.Advance(700) {
		t.Fatal("Advance moved past a transaction with an event in flight")
	}
	wantSafe(t, tr, 200)
	must(t, tr.Done(tok))
	wantSafe(t, tr, 600)
}

func TestIdle(t *testing.T) {
	tr := New(10, 10)
	steps := []struct {
		name string
		do   func() error
		idle bool
	}{
		{"begin", func() error { return tr.Begin(100, time.Time{}) }, false},
		{"add", func() error { _, err := tr.Add(); return err }, false},
		{"commit", func() error { return tr.Commit(200) }, false},
		{"done", func() error { return tr.Done(100) }, true},
		{"empty begin", func() error { return tr.Begin(300, time.Time{}) }, false},
		{"empty commit", func() error { return tr.Commit(400) }, true},
	}
	for _, s := range steps {
		must(t, s.do())
		if tr.Idle() != s.idle {
			t.Fatalf("after %s: Idle() = %v, want %v", s.name, tr.Idle(), s.idle)
		}
	}
}

func TestFullEvents(t *testing.T) {
	tr := New(3, 100)
	must(t, tr.Begin(100, time.Time{}))
	var toks []LSN
	for range 3 {
		if tr.Full() {
			t.Fatalf("Full with %d events in flight, limit 3", tr.InFlight())
		}
		toks = append(toks, add(t, tr))
	}
	if !tr.Full() {
		t.Fatal("not Full with 3 events in flight, limit 3")
	}
	// Acks in the middle of the open transaction make room.
	must(t, tr.Done(toks[1]))
	if tr.Full() {
		t.Fatal("still Full after an ack")
	}
}

func TestFullTransactions(t *testing.T) {
	tr := New(100, 2)
	must(t, tr.Begin(100, time.Time{}))
	t1 := add(t, tr)
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	add(t, tr)
	if tr.Full() {
		t.Fatal("Full counts the open transaction")
	}
	must(t, tr.Commit(400))
	if !tr.Full() {
		t.Fatal("not Full with 2 committed transactions waiting, limit 2")
	}
	must(t, tr.Done(t1))
	if tr.Full() {
		t.Fatal("still Full after the oldest transaction became safe")
	}
}

// TestFullNeverDeadlocks waits on Full before every Add of a transaction far
// larger than both limits, with maxTxns 1: every wait must end by acking what
// is already in flight and confirming what is safe, without the Commit the
// caller has not read yet.
func TestFullNeverDeadlocks(t *testing.T) {
	tr := New(2, 1)
	var inflight []LSN
	final := LSN(100)
	for range 5 {
		must(t, tr.Begin(final, time.Time{}))
		for range 10 {
			for tr.Full() {
				if len(inflight) == 0 {
					if _, err := tr.Confirm(tr.Safe()); err != nil {
						t.Fatal(err)
					}
					if tr.Full() {
						t.Fatal("Full with nothing left to ack or confirm")
					}
					break
				}
				must(t, tr.Done(inflight[0]))
				inflight = inflight[1:]
			}
			inflight = append(inflight, add(t, tr))
		}
		must(t, tr.Commit(final+50))
		final += 100
	}
	for _, tok := range inflight {
		must(t, tr.Done(tok))
	}
	wantSafe(t, tr, final-50)
}

func TestInFlight(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	a, b := add(t, tr), add(t, tr)
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	c := add(t, tr)
	for i, tok := range []LSN{c, a, b} {
		if got, want := tr.InFlight(), 3-i; got != want {
			t.Fatalf("InFlight() = %d, want %d", got, want)
		}
		must(t, tr.Done(tok))
	}
	if tr.InFlight() != 0 {
		t.Fatalf("InFlight() = %d, want 0", tr.InFlight())
	}
}

func TestOpen(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	if final, ok := tr.Open(); !ok || final != 300 {
		t.Fatalf("Open() = %s, %v, want 300, true", final, ok)
	}
	must(t, tr.Commit(400))
	if _, ok := tr.Open(); ok {
		t.Fatal("Open() reports a committed transaction")
	}
}

func TestReset(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	tok := add(t, tr)
	must(t, tr.Commit(400))
	must(t, tr.Begin(500, time.Time{}))
	add(t, tr)
	wantSafe(t, tr, 200)

	// Restart from an older checkpoint: the safe position goes back.
	tr.Reset(150)
	wantSafe(t, tr, 150)
	if !tr.Idle() || tr.InFlight() != 0 || tr.Full() {
		t.Fatalf("after Reset: idle %v inflight %d full %v", tr.Idle(), tr.InFlight(), tr.Full())
	}
	if _, ok := tr.Open(); ok {
		t.Fatal("Reset kept the open transaction")
	}
	wantErr(t, tr.Done(tok), ErrUnknownToken)

	// PostgreSQL replays from the checkpoint, at or after it.
	wantErr(t, tr.Begin(149, time.Time{}), ErrOrder)
	must(t, tr.Begin(300, time.Time{}))
	tok = add(t, tr)
	must(t, tr.Commit(400))
	must(t, tr.Done(tok))
	wantSafe(t, tr, 400)
}

// TestRingBounded runs many transactions through a small ring, acked in
// reverse order so the ring wraps and Done searches it, and checks that a
// caller waiting on Full never makes the buffer outgrow maxTxns+1.
func TestRingBounded(t *testing.T) {
	const maxTxns = 5
	tr := New(1000, maxTxns)
	var waiting []LSN
	final := LSN(10)
	for range 200 {
		for tr.Full() {
			// Ack newest first: only the last ack releases anything.
			for i := len(waiting) - 1; i >= 0; i-- {
				must(t, tr.Done(waiting[i]))
			}
			waiting = waiting[:0]
		}
		must(t, tr.Begin(final, time.Time{}))
		waiting = append(waiting, add(t, tr))
		must(t, tr.Commit(final+5))
		if len(tr.buf) > maxTxns+1 {
			t.Fatalf("ring buffer has %d slots, limit %d", len(tr.buf), maxTxns+1)
		}
		final += 10
	}
	for _, tok := range waiting {
		must(t, tr.Done(tok))
	}
	wantSafe(t, tr, final-5)
}

// TestRingShrinks lets a caller ignore Full, then checks that the grown
// buffer is given back once the ring is empty.
func TestRingShrinks(t *testing.T) {
	tr := New(1000, 2)
	var toks []LSN
	for i := range 20 {
		final := LSN(10 + 10*i)
		must(t, tr.Begin(final, time.Time{}))
		toks = append(toks, add(t, tr))
		must(t, tr.Commit(final+5))
	}
	if len(tr.buf) < 20 {
		t.Fatalf("ring buffer has %d slots for 20 transactions", len(tr.buf))
	}
	for i := len(toks) - 1; i >= 0; i-- {
		must(t, tr.Done(toks[i]))
	}
	wantSafe(t, tr, 10+10*19+5)
	if len(tr.buf) > 3 {
		t.Fatalf("empty ring kept %d slots, limit 3", len(tr.buf))
	}
}

func TestSteadyStateAllocs(t *testing.T) {
	tr := New(100, 100)
	final := LSN(10)
	step := func() {
		if err := tr.Begin(final, time.Time{}); err != nil {
			t.Fatal(err)
		}
		a, err := tr.Add()
		if err != nil {
			t.Fatal(err)
		}
		b, err := tr.Add()
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Done(b); err != nil {
			t.Fatal(err)
		}
		if err := tr.Commit(final + 5); err != nil {
			t.Fatal(err)
		}
		if err := tr.Done(a); err != nil {
			t.Fatal(err)
		}
		if tr.Safe() != final+5 {
			t.Fatalf("Safe() = %s, want %s", tr.Safe(), final+5)
		}
		final += 10
	}
	step() // grow the ring
	if n := testing.AllocsPerRun(1000, step); n != 0 {
		t.Fatalf("steady state allocates %v times per transaction", n)
	}
}

// TestRefusedBlocksUntilRedo: a refused event keeps its transaction, and every
// later one, from becoming safe until the caller redoes it and the redo is acked.
func TestRefusedBlocksUntilRedo(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	a := add(t, tr)
	add(t, tr)
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, time.Time{}))
	c := add(t, tr)
	must(t, tr.Commit(400))
	must(t, tr.Done(c))
	why := errors.New("too large")
	must(t, tr.Refuse(a, why))
	select {
	case <-tr.Changed():
	default:
		t.Fatal("Refuse did not signal Changed")
	}
	must(t, tr.Done(a))
	wantSafe(t, tr, 0)
	if !tr.Drained() {
		t.Fatal("not drained with only a refused event left")
	}
	r := tr.TakeRefusals()
	if len(r) != 1 || r[0].Token != a || r[0].Err != why {
		t.Fatalf("refusals %+v", r)
	}
	if len(tr.TakeRefusals()) != 0 {
		t.Fatal("refusals taken twice")
	}
	must(t, tr.Redo(a))
	wantErr(t, tr.Redo(a), ErrNotBlocked)
	wantSafe(t, tr, 0)
	must(t, tr.Done(a))
	wantSafe(t, tr, 400)
}

// TestCancelNeverSafe: an event whose produce failed keeps its transaction from
// ever becoming safe, and no report is awaited for it.
func TestCancelNeverSafe(t *testing.T) {
	tr := New(10, 10)
	must(t, tr.Begin(100, time.Time{}))
	a := add(t, tr)
	b := add(t, tr)
	must(t, tr.Cancel(b))
	must(t, tr.Commit(200))
	must(t, tr.Done(a))
	wantSafe(t, tr, 0)
	if !tr.Drained() || tr.Idle() {
		t.Fatalf("drained %v idle %v", tr.Drained(), tr.Idle())
	}
	wantErr(t, tr.Cancel(b), ErrDoubleAck)
}

// TestConfirmLag: Confirm forgets what it covers, returns the commit time of the
// newest confirmed transaction, and zero once everything is confirmed.
func TestConfirmLag(t *testing.T) {
	tr := New(10, 10)
	t1 := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	t2 := t1.Add(time.Second)
	t3 := t2.Add(time.Second)
	must(t, tr.Begin(100, t1))
	a := add(t, tr)
	must(t, tr.Commit(200))
	must(t, tr.Begin(300, t2)) // no events: folded into the one before
	must(t, tr.Commit(400))
	must(t, tr.Begin(500, t3))
	c := add(t, tr)
	must(t, tr.Commit(600))
	must(t, tr.Done(a))
	wantSafe(t, tr, 400)
	if n := tr.Unconfirmed(); n != 2 {
		t.Fatalf("Unconfirmed %d, want 2", n)
	}
	at, err := tr.Confirm(200)
	if err != nil || !at.Equal(t1) {
		t.Fatalf("Confirm(200) = %v, %v; want %v", at, err, t1)
	}
	if n := tr.Unconfirmed(); n != 1 {
		t.Fatalf("Unconfirmed %d after confirming the first event, want 1", n)
	}
	at, _ = tr.Confirm(400)
	if !at.Equal(t2) {
		t.Fatalf("Confirm(400) = %v, want %v", at, t2)
	}
	if _, err := tr.Confirm(600); !errors.Is(err, ErrOrder) {
		t.Fatalf("Confirm past safe: %v", err)
	}
	must(t, tr.Done(c))
	at, _ = tr.Confirm(600)
	if !at.IsZero() || tr.Unconfirmed() != 0 {
		t.Fatalf("caught up: lag time %v, unconfirmed %d", at, tr.Unconfirmed())
	}
}
