package relay

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/decoder"
	pt "github.com/pgoutbox/pgoutbox/internal/pgoutputtest"
	"github.com/pgoutbox/pgoutbox/ledger"
	"github.com/pgoutbox/pgoutbox/metrics"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// Fakes for the loop's ports, and a harness that drives the loop turn by turn on
// the test's goroutine.

// fakeClock is fast time: a timer moves the clock and fires after a millisecond of
// real time, so a loop that waits never blocks the test for long, and a goroutine
// that finishes at once (a fake commit) wins the race against the timer.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Timer fires after a millisecond of real time, moving the clock by d, unless it
// was stopped first: a wait that ended otherwise does not move time.
func (c *fakeClock) Timer(d time.Duration) (<-chan time.Time, func()) {
	ch := make(chan time.Time, 1)
	var mu sync.Mutex
	stopped := false
	go func() {
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			ch <- c.advance(d)
		}
	}()
	return ch, func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
}

func (c *fakeClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return c.now
}

// event is something that happened at a port, in order: "save 0/150",
// "status 0/150", "produce e1", "receive".
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, fmt.Sprintf(format, args...))
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.events...)
}

// fakeStream plays a script: each Receive returns the next message, or times out
// (moving the clock to the deadline) when the script is empty. A deadline in the
// past fails the test: that is the exactly-once stall.
type fakeStream struct {
	t      *testing.T
	clock  *fakeClock
	j      *journal
	script []*source.Message
	// statuses are the confirmed positions sent, with whether a reply was asked.
	statuses []sentStatus
	receives int
	// receive, if set, replaces the script.
	receive    func(deadline time.Time) (*source.Message, error)
	sendStatus func(lsn source.LSN) error
}

type sentStatus struct {
	lsn   source.LSN
	reply bool
	at    time.Time
}

func (s *fakeStream) Receive(deadline time.Time) (*source.Message, error) {
	s.t.Helper()
	now := s.clock.Now()
	if deadline.Before(now) {
		s.t.Fatalf("Receive with a deadline %s in the past", now.Sub(deadline))
	}
	s.receives++
	if s.receive != nil {
		return s.receive(deadline)
	}
	if len(s.script) == 0 {
		s.clock.advance(deadline.Sub(now))
		return nil, source.ErrTimeout
	}
	m := s.script[0]
	s.script = s.script[1:]
	return m, nil
}

func (s *fakeStream) SendStatus(lsn source.LSN, reply bool) error {
	s.j.add("status %s", lsn)
	s.statuses = append(s.statuses, sentStatus{lsn: lsn, reply: reply, at: s.clock.Now()})
	if s.sendStatus != nil {
		return s.sendStatus(lsn)
	}
	return nil
}

// push appends pgoutput messages to the script.
func (s *fakeStream) push(msgs ...[]byte) {
	for _, m := range msgs {
		s.script = append(s.script, &source.Message{Data: m})
	}
}

func (s *fakeStream) last() source.LSN {
	if len(s.statuses) == 0 {
		return 0
	}
	return s.statuses[len(s.statuses)-1].lsn
}

// fakeProducer records what is produced and can fail; with the transactional
// methods it serves the exactly-once committer.
type fakeProducer struct {
	j        *journal
	mu       sync.Mutex
	produced []sink.Message
	produce  func(m *sink.Message) error

	begins, commits, aborts int
	records                 []checkpoint.Checkpoint
	commit                  func(ctx context.Context) error
	flush                   func() int
}

func (p *fakeProducer) Produce(m *sink.Message) error {
	if p.produce != nil {
		if err := p.produce(m); err != nil {
			return err
		}
	}
	c := *m // sink.Producer copies what it needs: so does the fake
	c.Key, c.Value, c.ID = append([]byte(nil), m.Key...), append([]byte(nil), m.Value...), append([]byte(nil), m.ID...)
	c.Headers = nil
	for _, hd := range m.Headers {
		c.Headers = append(c.Headers, sink.Header{Key: hd.Key, Value: append([]byte(nil), hd.Value...)})
	}
	p.mu.Lock()
	p.produced = append(p.produced, c)
	p.mu.Unlock()
	p.j.add("produce %s", m.ID)
	return nil
}

func (p *fakeProducer) BeginTransaction() error { p.begins++; p.j.add("begin"); return nil }

func (p *fakeProducer) Flush(time.Duration) int {
	if p.flush != nil {
		return p.flush()
	}
	return 0
}

func (p *fakeProducer) CommitTransaction(ctx context.Context) error {
	if p.commit != nil {
		if err := p.commit(ctx); err != nil {
			return err
		}
	}
	p.commits++
	p.j.add("commit")
	return nil
}

func (p *fakeProducer) AbortTransaction(context.Context) error {
	p.aborts++
	p.j.add("abort")
	return nil
}

func (p *fakeProducer) ProduceCheckpoint(topic, key string, cp checkpoint.Checkpoint) error {
	p.records = append(p.records, cp)
	p.j.add("record %s %s/%d", cp.LSN, cp.PartialFinal, cp.PartialEvents)
	return nil
}

// messages returns the produced messages.
func (p *fakeProducer) messages() []sink.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sink.Message(nil), p.produced...)
}

// fakeStore records saves and can fail.
type fakeStore struct {
	j     *journal
	saved []checkpoint.Checkpoint
	err   func() error
}

func (s *fakeStore) Save(_ context.Context, cp checkpoint.Checkpoint) error {
	if s.err != nil {
		if err := s.err(); err != nil {
			s.j.add("save %s failed", cp.LSN)
			return err
		}
	}
	s.saved = append(s.saved, cp)
	s.j.add("save %s", cp.LSN)
	return nil
}

// harness is a loop wired to fakes.
type harness struct {
	t      *testing.T
	clock  *fakeClock
	j      *journal
	stream *fakeStream
	prod   *fakeProducer
	store  *fakeStore
	led    *ledger.Ledger
	reps   *reports
	m      *metrics.Metrics
	l      *loop
	acked  int // produced messages already acked by ackAll
}

// start is where the harness's loop starts: its checkpoint and the ledger.
const startLSN source.LSN = 0x1000

func newHarness(t *testing.T, maxInFlight int) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(), j: &journal{}, m: metrics.New("test")}
	h.stream = &fakeStream{t: t, clock: h.clock, j: h.j}
	h.prod = &fakeProducer{j: h.j}
	h.store = &fakeStore{j: h.j}
	h.led = ledger.New(maxInFlight, maxTxnsInFlight)
	h.led.Reset(startLSN)
	h.reps = &reports{led: h.led, m: h.m, log: zerolog.Nop()}
	rows, err := outbox.NewMapper(outbox.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	h.l = &loop{
		cfg: loopConfig{statusInterval: time.Second, maxInFlight: maxInFlight,
			deadLetterTopic: "outbox.dead-letter", deadLetterMax: deadLetterMax(nil)},
		clock: h.clock, log: zerolog.Nop(), m: h.m,
		stream: h.stream, prod: h.prod, led: h.led, com: ackCommitter{}, store: h.store,
		dec: decoder.New(), rows: rows, poison: map[string]outbox.RowError{},
		cp: checkpoint.Checkpoint{Slot: "s", SystemID: "1", Database: "db", LSN: startLSN},
	}
	h.l.start()
	return h
}

// exactlyOnce gives the harness's loop a transactional committer.
func (h *harness) exactlyOnce(rule skipRule) *txnCommitter {
	c := &txnCommitter{prod: h.prod, clock: h.clock, topic: "pgoutbox.checkpoints", key: "pgoutbox-s", id: h.l.cp,
		interval: 100 * time.Millisecond, maxEvents: 5000, linger: lingerAfterEvent, keepEvery: time.Second,
		rule: rule, committed: max(rule.Before, startLSN)}
	h.l.com = c
	h.reps.exactlyOnce = true
	return c
}

// turns runs n turns of the loop, failing the test on an error.
func (h *harness) turns(n int) {
	h.t.Helper()
	for range n {
		if err := h.l.turn(context.Background()); err != nil {
			h.t.Fatalf("turn: %v", err)
		}
	}
}

// until runs turns until cond holds, at most max of them.
func (h *harness) until(max int, what string, cond func() bool) {
	h.t.Helper()
	for range max {
		if cond() {
			return
		}
		if err := h.l.turn(context.Background()); err != nil {
			h.t.Fatalf("turn while waiting for %s: %v", what, err)
		}
	}
	if !cond() {
		h.t.Fatalf("after %d turns still no %s; journal: %v", max, what, h.j.list())
	}
}

// ackAll delivers a successful report for every message produced so far.
func (h *harness) ackAll() {
	h.t.Helper()
	msgs := h.prod.messages()
	for _, m := range msgs[h.acked:] {
		if err := h.reps.handle(&sink.Report{Token: m.Token, Topic: m.Topic, DeadLetter: m.DeadLetter, ID: string(m.ID)}); err != nil {
			h.t.Fatalf("ack %s: %v", m.ID, err)
		}
	}
	h.acked = len(msgs)
}

// statusDue moves the clock to the next status update.
func (h *harness) statusDue() { h.clock.advance(h.l.nextStatus.Sub(h.clock.Now())) }

// The pgoutput messages the tests stream: one outbox table (relation 1).
func relationMsg() []byte { return pt.RelationMsg(pt.Outbox(1)) }

func beginMsg(final source.LSN) []byte {
	return pt.Begin(final, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 7)
}

func commitMsg(final, end source.LSN) []byte {
	return pt.Commit(final, end, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

func insertMsg(id string) []byte {
	return pt.Insert(1, pt.Text(id), pt.Text("order"), pt.Text("k-"+id), pt.Text("Created"), pt.Text(`{"id":"`+id+`"}`))
}

// txn is a whole transaction: Begin, one insert per id, Commit.
func txn(final, end source.LSN, ids ...string) [][]byte {
	msgs := [][]byte{beginMsg(final)}
	for _, id := range ids {
		msgs = append(msgs, insertMsg(id))
	}
	return append(msgs, commitMsg(final, end))
}
