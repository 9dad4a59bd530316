package ledger

import (
	"errors"
	"math/rand/v2"
	"testing"
	"testing/quick"
	"time"
)

// modelTxn is one transaction of the reference model.
type modelTxn struct {
	final, end LSN
	committed  bool
	events     int // produced by Add
	acked      int // acked by Done
	stopped    int // refused or cancelled
	redone     int // put back in flight by Redo
}

// model is the reference the Ledger is checked against: a plain slice of
// every transaction since the last Reset, from which the safe position is
// computed straight from its definition on every call.
type model struct {
	txns []modelTxn
	// base is the position given to Reset or to an Advance that moved.
	base LSN
	// last is the end LSN of the newest committed transaction.
	last LSN
	// confirmed is the position last given to Confirm or Reset.
	confirmed LSN
}

// pending is how many of x's events await a report.
func (x modelTxn) pending() int { return x.events + x.redone - x.acked - x.stopped }

// blocked is how many of x's events were refused or cancelled and not redone.
func (x modelTxn) blocked() int { return x.stopped - x.redone }

func (x modelTxn) complete() bool { return x.committed && x.pending() == 0 && x.blocked() == 0 }

// prefix returns how many transactions, oldest first, are complete together
// with every transaction before them.
func (m *model) prefix() int {
	n := 0
	for _, x := range m.txns {
		if !x.complete() {
			break
		}
		n++
	}
	return n
}

func (m *model) safe() LSN {
	s := m.base
	if p := m.prefix(); p > 0 {
		s = max(s, m.txns[p-1].end)
	}
	return s
}

func (m *model) open() (final LSN, ok bool) {
	if n := len(m.txns); n > 0 && !m.txns[n-1].committed {
		return m.txns[n-1].final, true
	}
	return 0, false
}

func (m *model) idle() bool { return m.prefix() == len(m.txns) }

func (m *model) inflight() int {
	n := 0
	for _, x := range m.txns {
		n += x.pending()
	}
	return n
}

// unconfirmedCommitted counts the events of committed transactions past the
// confirmed position.
func (m *model) unconfirmedCommitted() int {
	n := 0
	for _, x := range m.txns {
		if x.committed && x.end > m.confirmed {
			n += x.events
		}
	}
	return n
}

func (m *model) unconfirmed() int {
	n := m.unconfirmedCommitted()
	if k := len(m.txns); k > 0 && !m.txns[k-1].committed {
		n += m.txns[k-1].events
	}
	return n
}

// waiting returns the committed transactions that are not yet safe.
func (m *model) waiting() int {
	n := 0
	for _, x := range m.txns[m.prefix():] {
		if x.committed {
			n++
		}
	}
	return n
}

// floor is the lowest final LSN the next Begin may use.
func (m *model) floor() LSN { return max(m.last, m.safe()) }

// index returns the position of the transaction whose final LSN is tok.
func (m *model) index(tok LSN) int {
	for i, x := range m.txns {
		if x.final == tok {
			return i
		}
	}
	return -1
}

// sim drives a Ledger and the model side by side and checks after every
// operation that they agree.
type sim struct {
	tb testing.TB
	tr *Ledger
	m  model
	// acks holds one token per event produced and not yet reported.
	acks []LSN
	// blocked holds one token per event refused or cancelled and not redone.
	blocked []LSN
	// prev is Safe at the previous check, for monotonicity.
	prev LSN

	maxEvents, maxTxns int
	// respectFull says the driver waits on Full before Begin, as pgoutbox
	// does; the ring must then stay within maxTxns+1 slots.
	respectFull bool
}

func newSim(tb testing.TB, maxEvents, maxTxns int, respectFull bool) *sim {
	return &sim{
		tb:          tb,
		tr:          New(maxEvents, maxTxns),
		maxEvents:   maxEvents,
		maxTxns:     maxTxns,
		respectFull: respectFull,
	}
}

// expect fails unless err wraps want, or is nil when want is nil.
func (s *sim) expect(op string, err, want error) {
	s.tb.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		s.tb.Fatalf("%s: got error %v, want %v", op, err, want)
	}
}

// begin starts a valid transaction delta past the floor; while another is
// open it checks the Begin is refused.
func (s *sim) begin(delta uint64) {
	s.tryBegin(max(s.m.floor(), 1) + LSN(delta))
}

// beginBad calls Begin below the floor, or with 0.
func (s *sim) beginBad(delta uint64) {
	final := LSN(0)
	if f := s.m.floor(); uint64(f) > delta {
		final = f - 1 - LSN(delta)
	}
	s.tryBegin(final)
}

func (s *sim) tryBegin(final LSN) {
	s.tb.Helper()
	err := s.tr.Begin(final, time.Time{})
	_, open := s.m.open()
	switch {
	case open:
		s.expect("begin "+final.String(), err, ErrOpen)
	case final == 0 || final < s.m.floor():
		s.expect("begin "+final.String(), err, ErrOrder)
	default:
		s.expect("begin "+final.String(), err, nil)
		s.m.txns = append(s.m.txns, modelTxn{final: final})
	}
	s.check()
}

func (s *sim) add() {
	s.tb.Helper()
	tok, err := s.tr.Add()
	final, open := s.m.open()
	if !open {
		s.expect("add", err, ErrNotOpen)
	} else {
		s.expect("add", err, nil)
		if tok != final {
			s.tb.Fatalf("add: token %s, want %s", tok, final)
		}
		s.m.txns[len(s.m.txns)-1].events++
		s.acks = append(s.acks, tok)
	}
	s.check()
}

// commit commits the open transaction delta past its final LSN; with none
// open it checks the Commit is refused.
func (s *sim) commit(delta uint64) {
	final, _ := s.m.open()
	s.tryCommit(max(final, s.m.last) + 1 + LSN(delta))
}

// commitBad calls Commit with an end at or before the final LSN.
func (s *sim) commitBad(delta uint64) {
	final, _ := s.m.open()
	s.tryCommit(final - min(final, LSN(delta)))
}

func (s *sim) tryCommit(end LSN) {
	s.tb.Helper()
	err := s.tr.Commit(end)
	final, open := s.m.open()
	switch {
	case !open:
		s.expect("commit "+end.String(), err, ErrNotOpen)
	case end <= final:
		s.expect("commit "+end.String(), err, ErrOrder)
	default:
		s.expect("commit "+end.String(), err, nil)
		x := &s.m.txns[len(s.m.txns)-1]
		x.committed, x.end = true, end
		s.m.last = end
	}
	s.check()
}

// done acks the i-th outstanding event, or an arbitrary token if none is.
func (s *sim) done(i int) {
	if len(s.acks) == 0 {
		s.doneToken(LSN(i))
		return
	}
	s.doneToken(s.acks[i%len(s.acks)])
}

// doneToken calls Done with any token and checks the outcome the model
// predicts: unknown, double ack, or one event less in flight.
func (s *sim) doneToken(tok LSN) {
	s.tb.Helper()
	err := s.tr.Done(tok)
	op := "done " + tok.String()
	switch k := s.m.index(tok); {
	case k < 0 || k < s.m.prefix():
		s.expect(op, err, ErrUnknownToken)
	case s.m.txns[k].pending() == 0:
		s.expect(op, err, ErrDoubleAck)
	default:
		s.expect(op, err, nil)
		s.m.txns[k].acked++
		s.acks = removeOne(s.acks, tok)
	}
	s.check()
}

// removeOne removes one occurrence of tok from toks.
func removeOne(toks []LSN, tok LSN) []LSN {
	for i, a := range toks {
		if a == tok {
			toks[i] = toks[len(toks)-1]
			return toks[:len(toks)-1]
		}
	}
	return toks
}

// stop refuses (or, with cancel, cancels) the i-th outstanding event.
func (s *sim) stop(i int, cancel bool) {
	s.tb.Helper()
	if len(s.acks) == 0 {
		return
	}
	tok := s.acks[i%len(s.acks)]
	var err error
	if cancel {
		err = s.tr.Cancel(tok)
	} else {
		err = s.tr.Refuse(tok, errors.New("refused"))
	}
	s.expect("stop "+tok.String(), err, nil)
	s.m.txns[s.m.index(tok)].stopped++
	s.acks = removeOne(s.acks, tok)
	s.blocked = append(s.blocked, tok)
	if !cancel {
		r := s.tr.TakeRefusals()
		if len(r) != 1 || r[0].Token != tok {
			s.tb.Fatalf("refusals %v, want one of %s", r, tok)
		}
	}
	s.check()
}

// redo puts the i-th blocked event back in flight, or checks that Redo of a
// transaction with nothing blocked is refused.
func (s *sim) redo(i int) {
	s.tb.Helper()
	if len(s.blocked) == 0 {
		if len(s.acks) > 0 {
			tok := s.acks[i%len(s.acks)]
			if k := s.m.index(tok); s.m.txns[k].blocked() == 0 {
				s.expect("redo "+tok.String(), s.tr.Redo(tok), ErrNotBlocked)
			}
		}
		return
	}
	tok := s.blocked[i%len(s.blocked)]
	s.expect("redo "+tok.String(), s.tr.Redo(tok), nil)
	s.m.txns[s.m.index(tok)].redone++
	s.blocked = removeOne(s.blocked, tok)
	s.acks = append(s.acks, tok)
	s.check()
}

// confirm confirms the safe position, or one a little before it as an
// exactly-once committer may, and checks that confirming past it is refused.
func (s *sim) confirm(back uint64) {
	s.tb.Helper()
	safe := s.m.safe()
	if _, err := s.tr.Confirm(safe + 1); !errors.Is(err, ErrOrder) {
		s.tb.Fatalf("confirm past safe %s: error %v", safe, err)
	}
	pos := safe - min(safe, LSN(back))
	_, err := s.tr.Confirm(pos)
	s.expect("confirm "+pos.String(), err, nil)
	s.m.confirmed = max(s.m.confirmed, pos)
	s.check()
}

// advance calls Advance around the safe position, as a keepalive would.
func (s *sim) advance(delta uint64) {
	s.tb.Helper()
	safe := s.m.safe()
	pos := safe + LSN(delta) - min(safe, 2)
	want := s.m.idle() && pos > safe
	if got := s.tr.Advance(pos); got != want {
		s.tb.Fatalf("advance %s: moved %v, want %v (safe %s, idle %v)", pos, got, want, safe, s.m.idle())
	}
	if want {
		s.m.base = pos
	}
	s.check()
}

// reset restarts from a checkpoint at or a little before the safe position.
func (s *sim) reset(back uint64) {
	safe := s.m.safe()
	pos := safe - min(safe, LSN(back))
	s.tr.Reset(pos)
	s.m = model{base: pos, confirmed: pos}
	s.acks = s.acks[:0]
	s.blocked = s.blocked[:0]
	s.prev = pos
	s.check()
}

// check compares every observable of the Ledger with the model.
func (s *sim) check() {
	s.tb.Helper()
	got := s.tr.Safe()
	if want := s.m.safe(); got != want {
		s.tb.Fatalf("Safe() = %s, model says %s", got, want)
	}
	if got < s.prev {
		s.tb.Fatalf("Safe() went back from %s to %s", s.prev, got)
	}
	s.prev = got
	p := s.m.prefix()
	for i, x := range s.m.txns {
		if i < p && got < x.end {
			s.tb.Fatalf("Safe() = %s is behind safe transaction %s..%s", got, x.final, x.end)
		}
		// Past the final LSN PostgreSQL would skip x on restart.
		if i >= p && got > x.final {
			s.tb.Fatalf("Safe() = %s passes unfinished transaction %+v", got, x)
		}
	}
	if s.m.idle() && len(s.m.txns) > 0 && got != max(s.m.last, s.m.base) {
		s.tb.Fatalf("all done but Safe() = %s, last end %s", got, s.m.last)
	}
	if s.tr.Idle() != s.m.idle() {
		s.tb.Fatalf("Idle() = %v, model says %v", s.tr.Idle(), s.m.idle())
	}
	if s.tr.InFlight() != s.m.inflight() || s.m.inflight() != len(s.acks) {
		s.tb.Fatalf("InFlight() = %d, model says %d, outstanding acks %d", s.tr.InFlight(), s.m.inflight(), len(s.acks))
	}
	gf, gok := s.tr.Open()
	if wf, wok := s.m.open(); gf != wf || gok != wok {
		s.tb.Fatalf("Open() = %s, %v, model says %s, %v", gf, gok, wf, wok)
	}
	full := s.m.inflight() >= s.maxEvents || s.m.unconfirmedCommitted() >= s.maxEvents || s.m.waiting() >= s.maxTxns
	if s.tr.Full() != full {
		s.tb.Fatalf("Full() = %v, model says %v (inflight %d, unconfirmed %d, waiting %d)", s.tr.Full(), full, s.m.inflight(), s.m.unconfirmedCommitted(), s.m.waiting())
	}
	if got, want := s.tr.Unconfirmed(), s.m.unconfirmed(); got != want {
		s.tb.Fatalf("Unconfirmed() = %d, model says %d", got, want)
	}
	if s.tr.Drained() != (s.m.inflight() == 0) {
		s.tb.Fatalf("Drained() = %v with %d in flight", s.tr.Drained(), s.m.inflight())
	}
	if got := s.tr.Confirmed(); got != s.m.confirmed {
		s.tb.Fatalf("Confirmed() = %s, model says %s", got, s.m.confirmed)
	}
	if s.respectFull && len(s.tr.buf) > s.maxTxns+1 {
		s.tb.Fatalf("ring buffer has %d slots, limit %d", len(s.tr.buf), s.maxTxns+1)
	}
	checkInvariants(s.tb, s.tr)
}

// drain commits the open transaction and acks every outstanding event in the
// order shuffle leaves them; then everything must be safe.
func (s *sim) drain(shuffle func([]LSN)) {
	s.tb.Helper()
	if _, open := s.m.open(); open {
		s.commit(0)
	}
	for len(s.blocked) > 0 {
		s.redo(0)
	}
	acks := append([]LSN(nil), s.acks...)
	shuffle(acks)
	for _, tok := range acks {
		s.doneToken(tok)
	}
	if !s.tr.Idle() || s.tr.InFlight() != 0 {
		s.tb.Fatalf("drained: idle %v, inflight %d", s.tr.Idle(), s.tr.InFlight())
	}
	if len(s.m.txns) > 0 && s.tr.Safe() != max(s.m.last, s.m.base) {
		s.tb.Fatalf("drained: Safe() = %s, want last end %s", s.tr.Safe(), s.m.last)
	}
	if !s.tr.Advance(s.tr.Safe() + 1) {
		s.tb.Fatal("drained: Advance did not move")
	}
	s.m.base = s.tr.Safe()
	s.confirm(0)
	if at, _ := s.tr.Confirm(s.tr.Safe()); !at.IsZero() || s.tr.Unconfirmed() != 0 {
		s.tb.Fatalf("drained and confirmed: lag time %v, unconfirmed %d", at, s.tr.Unconfirmed())
	}
}

// checkInvariants checks the invariants stated on Ledger from its fields.
func checkInvariants(tb testing.TB, t *Ledger) {
	tb.Helper()
	if t.count < 0 || t.count > len(t.buf) || t.start < 0 || t.start >= max(len(t.buf), 1) {
		tb.Fatalf("ring out of bounds: start %d count %d len %d", t.start, t.count, len(t.buf))
	}
	if t.count == 0 && (t.start != 0 || t.open) {
		tb.Fatalf("empty ring with start %d, open %v", t.start, t.open)
	}
	pending, committed := 0, 0
	for i := range t.count {
		x := t.at(i)
		pending += x.pending
		if x.end != 0 {
			committed += x.events
		}
		if x.pending < 0 || x.blocked < 0 || x.pending+x.blocked > x.events {
			tb.Fatalf("transaction %+v miscounted", *x)
		}
		openTxn := t.open && i == t.count-1
		if openTxn != (x.end == 0) || !openTxn && x.end <= x.final {
			tb.Fatalf("transaction %d of %d (open %v): %+v", i, t.count, t.open, *x)
		}
		if x.final < t.safe {
			tb.Fatalf("transaction %+v begins before safe %s", *x, t.safe)
		}
		if i > 0 {
			if prev := t.at(i - 1); x.final < prev.end || x.final <= prev.final {
				tb.Fatalf("transactions out of order: %+v then %+v", *prev, *x)
			}
		}
	}
	if t.count > 0 {
		if x := t.at(0); x.end != 0 && x.pending == 0 && x.blocked == 0 {
			tb.Fatalf("complete transaction %+v left at the head", *x)
		}
	}
	if pending != t.inflight {
		tb.Fatalf("inflight %d, ring holds %d pending", t.inflight, pending)
	}
	if committed != t.ringCommitted {
		tb.Fatalf("ringCommitted %d, ring holds %d committed events", t.ringCommitted, committed)
	}
	if t.confirmed > t.safe {
		tb.Fatalf("confirmed %s past safe %s", t.confirmed, t.safe)
	}
	events := 0
	for i, r := range t.retired[t.retiredHead:] {
		events += r.events
		if r.end > r.lastEnd || r.lastEnd > t.safe || r.end <= t.confirmed && r.events > 0 {
			tb.Fatalf("retired entry %d %+v (safe %s, confirmed %s)", i, r, t.safe, t.confirmed)
		}
		if i > 0 && r.end <= t.retired[t.retiredHead+i-1].lastEnd {
			tb.Fatalf("retired entries out of order at %d", i)
		}
	}
	if events != t.retiredEvents {
		tb.Fatalf("retiredEvents %d, entries hold %d", t.retiredEvents, events)
	}
}

// step plays one random operation of a stream in which each transaction has
// a planned number of events, some none; acks, Safe, keepalives, invalid
// calls and rare restarts are interleaved at random points.
func (s *sim) step(rng *rand.Rand, left *int) {
	_, open := s.m.open()
	switch r := rng.IntN(100); {
	case r < 40 && !open:
		if s.respectFull && s.tr.Full() {
			// Wait as pgoutbox does: for acks, for a decision on a
			// refusal, for a confirm.
			switch {
			case len(s.acks) > 0:
				s.done(rng.IntN(len(s.acks)))
			case len(s.blocked) > 0:
				s.redo(rng.IntN(len(s.blocked)))
			default:
				s.confirm(0)
			}
			return
		}
		s.begin(rng.Uint64N(3))
		*left = 0
		if rng.IntN(5) > 0 {
			*left = 1 + rng.IntN(2*s.maxEvents+2)
		}
	case r < 40 && *left > 0:
		s.add()
		*left--
	case r < 40:
		s.commit(rng.Uint64N(3))
	case r < 75:
		if len(s.acks) > 0 {
			s.done(rng.IntN(len(s.acks)))
		}
	case r < 78:
		s.check()
	case r < 81:
		s.stop(rng.IntN(len(s.acks)+1), rng.IntN(2) == 0)
	case r < 84:
		s.redo(rng.IntN(len(s.blocked) + 1))
	case r < 86:
		s.confirm(rng.Uint64N(3))
	case r < 88:
		s.advance(rng.Uint64N(5))
	case r < 99:
		s.invalid(rng.IntN(6), rng.Uint64N(4))
	default:
		s.reset(rng.Uint64N(3))
		*left = 0
	}
}

// invalid makes a call the Ledger must refuse, or a Done with a token that
// may or may not be valid.
func (s *sim) invalid(kind int, arg uint64) {
	_, open := s.m.open()
	switch {
	case kind == 0:
		s.beginBad(arg)
	case kind == 1 && open:
		s.begin(arg)
	case kind == 2 && !open:
		s.add()
	case kind == 3 && !open:
		s.commit(arg)
	case kind == 4:
		s.commitBad(arg)
	default:
		// A token near the stream: unknown, safe already, double, or valid.
		f := s.m.floor()
		s.doneToken(f - min(f, LSN(arg*3)))
	}
}

func TestLedgerMatchesModel(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		s := newSim(t, 1+rng.IntN(8), 1+rng.IntN(6), seed%2 == 0)
		left := 0
		for range 2000 {
			s.step(rng, &left)
		}
		s.drain(func(a []LSN) {
			rng.Shuffle(len(a), func(i, j int) { a[i], a[j] = a[j], a[i] })
		})
	}
}

// runOps interprets data as limits followed by (operation, argument) pairs,
// for FuzzLedger and testing/quick.
func runOps(tb testing.TB, data []byte) {
	if len(data) < 2 {
		return
	}
	s := newSim(tb, 1+int(data[0]%8), 1+int(data[1]%8), false)
	ops := data[2:]
	for i := 0; i+1 < len(ops); i += 2 {
		op, arg := ops[i], uint64(ops[i+1])
		switch op % 12 {
		case 0, 1:
			s.begin(arg % 3)
		case 2:
			s.beginBad(arg % 3)
		case 3, 4, 5:
			s.add()
		case 6:
			s.commit(arg % 3)
		case 7:
			s.commitBad(arg % 2)
		case 8, 9:
			s.done(int(arg))
		case 10:
			s.doneToken(LSN(arg))
		default:
			switch arg % 8 {
			case 0:
				s.advance(arg / 8 % 5)
			case 1:
				s.reset(arg / 8 % 3)
			case 2, 3:
				s.stop(int(arg/8), arg%2 == 0)
			case 4:
				s.redo(int(arg / 8))
			case 5, 6:
				s.confirm(arg / 8 % 3)
			default:
				s.check()
			}
		}
	}
	// Newest first: the order that holds the safe position back longest.
	s.drain(func(a []LSN) {
		for i, j := 0, len(a)-1; i < j; i, j = i+1, j-1 {
			a[i], a[j] = a[j], a[i]
		}
	})
}

func TestLedgerQuick(t *testing.T) {
	f := func(data []byte) bool {
		runOps(t, data)
		return !t.Failed()
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 5000}); err != nil {
		t.Fatal(err)
	}
}

func FuzzLedger(f *testing.F) {
	f.Add([]byte{3, 2, 0, 0, 3, 0, 3, 0, 6, 1, 8, 0, 0, 0, 6, 0, 8, 1, 11, 0})
	f.Add([]byte{0, 0, 0, 1, 6, 0, 0, 2, 3, 0, 6, 2, 11, 4, 10, 1, 9, 0})
	f.Add([]byte{7, 7, 2, 1, 7, 0, 0, 0, 3, 0, 3, 0, 3, 0, 9, 5, 11, 1, 0, 0, 6, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		runOps(t, data)
	})
}
