package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/internal/failpoint"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
	"github.com/pgoutbox/pgoutbox/tracker"
)

// earlyConfirmGap is the shortest time between two confirms made early because the
// in-flight window is half full.
const earlyConfirmGap = 20 * time.Millisecond

// maxTxnsInFlight bounds committed transactions waiting for acks; with many
// transactions of one event each, the event limit is reached first.
const maxTxnsInFlight = 1 << 16

// session is one replication connection and the state that goes with it.
type session struct {
	r      *relay
	stream *source.Stream
	conn   *source.Conn // regular connection, for the backfill
	// streaming is false until START_REPLICATION: a backfill runs before it.
	streaming bool
	// isolated: the session's producer sends one event per request.
	isolated bool
	plan     *backfillPlan // a backfill to run before streaming, or nil
	prod     *sink.Producer
	store    checkpoint.Store
	cp       checkpoint.Checkpoint // identity of the checkpoint; LSN is the last saved
	dec      *decoder.Decoder
	mapper   *outbox.Mapper
	messages *outbox.MessageMapper // nil unless --messages-prefix

	mu      sync.Mutex // guards tr between the replication loop and the delivery reports
	tr      *tracker.Tracker
	room    chan struct{} // signalled after acks, wakes a loop waiting for room
	drained chan struct{} // signalled when nothing is in flight while draining
	// failed is the first row Kafka refused under --on-error=fail, and failedEvents
	// counts refused events, which stay in flight in the tracker forever (guarded by mu).
	failed       *RowFailedError
	failedEvents int
	// suspects are events of a request Kafka refused permanently: reported after the
	// fatal error the refusal caused, or in exactly-once mode the first refused
	// message of the open Kafka transaction (guarded by mu).
	suspects []suspect
	// produced is the token of the newest event handed to Kafka (guarded by mu).
	produced source.LSN
	// abandoned: the open Kafka transaction was aborted on purpose, so the reports
	// of its purged messages are no failure (guarded by mu).
	abandoned bool

	// Owned by the replication loop.
	commitTime  time.Time  // of the open transaction, from its Begin
	commits     []commitAt // committed transactions not yet confirmed, oldest first
	commitsHead int
	confirmedAt time.Time // commit time of the newest confirmed transaction
	// openEvents counts the open transaction's events; unconfirmed counts every
	// produced event not yet covered by the checkpoint, open transaction included.
	// These are what a crash would publish again.
	openEvents  int
	unconfirmed int
	inTxn       bool         // between a Begin and its Commit
	eos         *exactlyOnce // nil unless --exactly-once
	serverEnd   source.LSN
	lastConfirm time.Time // when confirm last ran
	pubChecked  time.Time // when the publication was last checked
	msg         sink.Message
	timer       *time.Timer
}

// commitAt remembers a committed transaction until it is confirmed: when it
// committed, to report how far behind the confirmed position is in time, and how
// many events it had, to bound what a crash publishes twice.
type commitAt struct {
	end    source.LSN
	at     time.Time
	events int
}

// session runs one replication connection until it fails or ctx ends.
func (r *relay) session(ctx context.Context) error {
	cfg := r.cfg
	conn, err := source.Connect(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	server, err := r.prepare(ctx, conn)
	if err != nil {
		return err
	}
	store, err := r.store(ctx, conn)
	if err != nil {
		return err
	}
	stream, err := source.Dial(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer stream.Close(context.Background())
	ident, err := stream.Identify(ctx)
	if err != nil {
		return err
	}
	id := checkpoint.Checkpoint{Slot: cfg.Slot, SystemID: ident.SystemID, Database: server.Database}
	start, plan, err := r.position(ctx, conn, stream, store, id, server.Version)
	if err != nil {
		return err
	}
	streaming := plan == nil
	if streaming {
		if err := stream.Start(ctx, cfg.Slot, start.LSN, r.startOptions()); err != nil {
			return err
		}
	} else {
		start.LSN = backfillPending // nothing is confirmable before the backfill is done
	}
	mapping := cfg.Mapping
	if mapping.FirstTable() == "" {
		mapping.Tables = []string{"message.outbox"} // tableless: the table mapper never matches
	}
	mapper, err := outbox.NewMapper(mapping)
	if err != nil {
		return permanent(err)
	}
	var messages *outbox.MessageMapper
	if cfg.MessagesPrefix != "" {
		if messages, err = outbox.NewMessageMapper(mapping); err != nil {
			return permanent(err)
		}
	}
	var eos *exactlyOnce
	if cfg.ExactlyOnce {
		// Only now, holding the slot, may this instance fence the producer of
		// another: a standby that did it while waiting would stop the active one.
		if eos, err = r.startExactlyOnce(ctx, id); err != nil {
			return err
		}
		if plan != nil && plan.unfinished {
			if start, plan, err = r.resumeBackfill(ctx, stream, store, start, plan, eos, server.Version); err != nil {
				return err
			}
			if streaming = plan == nil; streaming {
				if err := stream.Start(ctx, cfg.Slot, start.LSN, r.startOptions()); err != nil {
					return err
				}
			}
		}
	} else if r.producer == nil {
		kcfg := cfg.Kafka
		kcfg.Isolate = r.isolating
		// A dead-letter record needs the refused message's key and value back.
		kcfg.ReportFields = cfg.OnError == OnErrorDeadLetter
		p, err := sink.New(kcfg, nil, r.log)
		if err != nil {
			return permanent(err)
		}
		r.producer = p
	}
	r.streamed = true
	r.log.Info().Str("slot", cfg.Slot).Stringer("lsn", start.LSN).Str("server", source.Describe(cfg.PostgresURL)).
		Str("table", cfg.Mapping.FirstTable()).Msg("streaming")
	r.m.Streaming.Set(1)
	r.m.CheckpointLSN.Set(float64(start.LSN))
	r.m.Confirmed(start.LSN, time.Time{})
	defer r.m.Streaming.Set(0)

	s := &session{
		r: r, stream: stream, streaming: streaming, isolated: r.isolating, conn: conn, plan: plan, prod: r.producer, store: store, cp: start,
		dec: decoder.New(), mapper: mapper, messages: messages,
		tr:      tracker.New(cfg.MaxInFlight, maxTxnsInFlight),
		eos:     eos,
		room:    make(chan struct{}, 1),
		drained: make(chan struct{}, 1),
		timer:   time.NewTimer(time.Hour),
	}
	s.tr.Reset(start.LSN)
	s.prod.StateChanged = func(up bool, reason string) {
		if up {
			r.m.BrokersUp.Set(1)
			r.m.SetReady(true, "")
		} else {
			r.m.BrokersUp.Set(0)
			r.m.SetReady(false, reason)
		}
	}
	return s.run(ctx)
}

// run streams until ctx ends or something fails, then drains in-flight acks and
// confirms what is safe.
func (s *session) run(ctx context.Context) error {
	r := s.r
	reports, stopReports := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(reports)
	g.Go(func() error { return s.prod.Run(gctx, s.onReport) })
	// Stop reading when shutting down or when the report loop fails.
	stopOnCancel := context.AfterFunc(ctx, s.stream.Interrupt)
	stopOnFail := context.AfterFunc(gctx, s.stream.Interrupt)
	defer stopOnCancel()
	defer stopOnFail()

	var loopErr error
	if s.plan != nil {
		loopErr = s.backfill(ctx, gctx)
		if loopErr == nil && ctx.Err() == nil && gctx.Err() == nil {
			loopErr = s.stream.Start(ctx, r.cfg.Slot, s.cp.LSN, r.startOptions())
			s.streaming = loopErr == nil
		}
	}
	r.m.SetReady(true, "")
	if loopErr == nil && ctx.Err() == nil {
		loopErr = s.loop(ctx, gctx)
	}
	r.m.SetReady(false, "stopping")

	shutdown := ctx.Err() != nil
	if shutdown && loopErr == nil && gctx.Err() == nil && s.eos != nil && s.eos.open {
		if s.streaming {
			// Publish what was read, even half a PostgreSQL transaction: the
			// checkpoint record says how much of it is in Kafka.
			loopErr = s.commitKafka(s.inTxn)
		} else {
			// An interrupted backfill is not published: the next start redoes it.
			// Aborting now rather than at the next start's InitTransactions keeps
			// read_committed consumers of these partitions from waiting for it.
			s.mu.Lock()
			s.abandoned = true
			s.mu.Unlock()
			actx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
			loopErr = s.prod.AbortTransaction(actx)
			cancel()
		}
	}
	var drainErr error
	if gctx.Err() == nil && !s.abandoned {
		drainErr = s.drain(gctx, r.cfg.ShutdownTimeout)
	}
	// Confirm what is safe even after a failure: it is all acknowledged.
	confirmErr := s.confirm(false)
	if errors.Is(confirmErr, errLeaveIsolation) {
		confirmErr = nil
		if !shutdown {
			loopErr = cmp.Or(loopErr, errLeaveIsolation)
		}
	}
	stopReports()
	reportErr := g.Wait()

	s.mu.Lock()
	left := s.tr.InFlight()
	s.mu.Unlock()
	if left > 0 || reportErr != nil || s.prod.InQueue() > 0 || s.eos != nil {
		// In exactly-once mode every session starts with a new transactional
		// producer: InitTransactions aborts whatever this one left open.
		// Messages still queued would report to a tracker that no longer exists; a
		// new producer starts clean, and the events are replayed from the checkpoint.
		r.closeProducer()
	}
	if s.isolated && !r.isolating {
		r.closeProducer() // the next session batches again
	}
	switch {
	case reportErr != nil:
		if err := s.refused(); err != nil {
			return err
		}
		if sink.Fatal(reportErr) {
			r.m.ProducerErrors.WithLabelValues("fatal").Inc()
			return fmt.Errorf("kafka producer failed, rebuilding it and resuming from the checkpoint: %w", reportErr)
		}
		return reportErr
	case s.failed != nil:
		return permanent(s.failed)
	case loopErr != nil:
		return loopErr
	case drainErr != nil:
		return drainErr
	case shutdown && confirmErr != nil:
		return fmt.Errorf("final confirm: %w", confirmErr)
	}
	if shutdown {
		r.log.Info().Stringer("confirmed", s.cp.LSN).Msg("stopped; every acknowledged event is confirmed")
	}
	return nil
}

// loop is the replication loop: it reads, decodes, maps and produces, and every
// StatusInterval saves the checkpoint and confirms. It returns nil when ctx ends.
func (s *session) loop(ctx, reports context.Context) error {
	interval := s.r.cfg.StatusInterval
	next := time.Now().Add(interval)
	for {
		if ctx.Err() != nil || reports.Err() != nil {
			return nil
		}
		now := time.Now()
		if !now.Before(next) {
			if err := s.confirm(false); err != nil {
				return err
			}
			if err := s.checkPublication(now); err != nil {
				return err
			}
			next = now.Add(interval)
		}
		// Checkpoint early under load, so that what a crash would publish again
		// stays within the in-flight window instead of a status interval's worth.
		// At most every earlyConfirmGap: each confirm costs an fsync, and acks that
		// trickle in one by one must not cost one each. When the window is full,
		// a confirm is what makes room, so then the gap does not apply.
		if s.unconfirmed >= s.r.cfg.MaxInFlight/2 && (now.Sub(s.lastConfirm) >= earlyConfirmGap || s.full()) && s.safeAhead() {
			if err := s.confirm(false); err != nil {
				return err
			}
			next = time.Now().Add(interval)
			continue
		}
		deadline := next
		if s.eos != nil && s.eos.open {
			// Commit the Kafka transaction when it is due, or when the window is
			// full: its events cannot be confirmed before it commits.
			if !s.inTxn && !now.Before(s.eos.due) || s.full() {
				if err := s.commitKafka(s.inTxn); err != nil {
					return err
				}
				continue
			}
			if s.eos.due.Before(deadline) {
				deadline = s.eos.due
			}
		}
		if s.full() {
			// Backpressure: Kafka is slow or down. Stop reading (the walsender waits
			// on TCP) but keep confirming so it does not time out.
			s.wait(ctx, reports, next)
			continue
		}
		msg, err := s.stream.Receive(deadline)
		switch {
		case errors.Is(err, source.ErrTimeout):
			continue
		case errors.Is(err, source.ErrInterrupted):
			return nil
		case err != nil:
			return err
		}
		if msg.ServerWALEnd > s.serverEnd {
			s.serverEnd = msg.ServerWALEnd
		}
		if msg.Keepalive {
			s.keepalive(msg)
			if msg.ReplyRequested {
				if err := s.confirm(false); err != nil {
					return err
				}
				next = time.Now().Add(interval)
			}
			continue
		}
		if err := s.handle(msg); err != nil {
			return err
		}
	}
}

// publicationChecks: every this many status intervals (30 s by default) a
// streaming session checks that the publication still covers the outbox table.
const publicationChecks = 30

// checkPublication stops streaming when the outbox table left the publication.
// Dropping and re-creating the table does that silently: PostgreSQL then sends
// nothing of the new table, and pgoutbox would wait forever for events.
func (s *session) checkPublication(now time.Time) error {
	table := s.r.cfg.Mapping.FirstTable()
	if table == "" || now.Sub(s.pubChecked) < publicationChecks*s.r.cfg.StatusInterval {
		return nil
	}
	s.pubChecked = now
	pub, found, err := s.conn.Publication(context.Background(), s.r.cfg.Publication, table)
	if err != nil {
		return err
	}
	if !found {
		return &source.SetupError{Msg: fmt.Sprintf("publication %q was dropped while pgoutbox streamed; re-create it (sql/publication.sql) — events committed meanwhile are not in the stream", s.r.cfg.Publication)}
	}
	return source.CheckPublication(pub, table)
}

// keepalive confirms the server's WAL position when nothing is in flight, so an idle
// outbox in a busy database does not pin WAL. Only then: with anything in flight the
// position may be past an unacknowledged event.
func (s *session) keepalive(msg *source.Message) {
	s.mu.Lock()
	s.tr.Advance(msg.ServerWALEnd)
	s.mu.Unlock()
}

// full reports whether reading must pause: too many events unacknowledged, or too
// many acknowledged but not yet confirmable. The open transaction does not count
// for the second: it cannot be confirmed before its commit arrives, so a
// transaction larger than the window streams through, bounded by acks alone.
func (s *session) full() bool {
	if s.unconfirmed-s.openEvents >= s.r.cfg.MaxInFlight {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tr.Full()
}

// safeAhead reports whether acks made a newer position confirmable.
func (s *session) safeAhead() bool {
	s.mu.Lock()
	safe := s.tr.Safe()
	s.mu.Unlock()
	if s.eos != nil {
		safe = s.eos.confirmable(safe)
	}
	return safe > s.cp.LSN
}

// wait blocks until an ack makes room, the next status update is due, or either
// context ends.
func (s *session) wait(ctx, reports context.Context, until time.Time) {
	s.r.m.Turn()
	s.timer.Reset(time.Until(until))
	select {
	case <-s.room:
	case <-s.timer.C:
	case <-ctx.Done():
	case <-reports.Done():
	}
	if !s.timer.Stop() {
		select {
		case <-s.timer.C:
		default:
		}
	}
}

// drain waits up to timeout for every in-flight event to be acknowledged, confirming
// meanwhile so the walsender does not time out.
func (s *session) drain(reports context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		n := s.tr.InFlight() - s.failedEvents
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d events still unacknowledged after %s; they are not confirmed and will be published again on restart", n, timeout)
		}
		s.timer.Reset(min(s.r.cfg.StatusInterval, time.Until(deadline)+time.Millisecond))
		select {
		case <-s.drained:
		case <-s.timer.C:
			_ = s.confirm(false)
		case <-reports.Done():
			return nil
		}
		if !s.timer.Stop() {
			select {
			case <-s.timer.C:
			default:
			}
		}
	}
}

// confirm saves the safe position to the checkpoint and then confirms it to
// PostgreSQL. The order matters: a checkpoint ahead of the slot is harmless (the
// next start takes the newer of the two), a slot ahead of a lost checkpoint is a gap.
func (s *session) confirm(reply bool) error {
	r := s.r
	r.m.Turn()
	s.lastConfirm = time.Now()
	s.mu.Lock()
	safe := s.tr.Safe()
	inflight := s.tr.InFlight()
	idle := s.tr.Idle()
	s.mu.Unlock()
	if s.eos != nil {
		safe = s.eos.confirmable(safe)
		idle = idle && !s.eos.open
	}
	r.m.InFlight.Set(float64(inflight))
	if safe > s.cp.LSN {
		cp := s.cp
		cp.LSN = safe
		if err := r.save(context.Background(), s.store, cp); err != nil {
			return err
		}
		s.cp = cp
	}
	if !s.streaming {
		return nil
	}
	if err := s.stream.SendStatus(s.cp.LSN, reply); err != nil {
		return err
	}
	failpoint.Hit("after-confirm")
	r.m.Confirmed(s.cp.LSN, s.confirmedCommit(idle))
	if s.serverEnd > s.cp.LSN {
		r.m.LagBytes.Set(float64(s.serverEnd - s.cp.LSN))
	} else {
		r.m.LagBytes.Set(0)
	}
	if r.isolating && s.cp.LSN > r.isolateUntil {
		r.isolating = false
		r.log.Info().Stringer("lsn", s.cp.LSN).Msg("past the refused batch; batching events again")
		return errLeaveIsolation
	}
	return nil
}

// confirmIfDue confirms when a status interval passed since the last confirm; for
// the places that wait outside the loop.
func (s *session) confirmIfDue() error {
	if time.Since(s.lastConfirm) < s.r.cfg.StatusInterval {
		return nil
	}
	return s.confirm(false)
}

// confirmedCommit forgets committed transactions up to the confirmed position and
// returns the newest confirmed one's commit time, or zero when caught up.
func (s *session) confirmedCommit(idle bool) time.Time {
	for s.commitsHead < len(s.commits) && s.commits[s.commitsHead].end <= s.cp.LSN {
		c := s.commits[s.commitsHead]
		s.confirmedAt = c.at
		s.unconfirmed -= c.events
		s.commitsHead++
	}
	if s.commitsHead > len(s.commits)/2 {
		s.commits = s.commits[:copy(s.commits, s.commits[s.commitsHead:])]
		s.commitsHead = 0
	}
	if idle {
		s.confirmedAt = time.Time{}
	}
	return s.confirmedAt
}

// save writes a checkpoint durably, between the failpoints crash tests use.
func (r *relay) save(ctx context.Context, store checkpoint.Store, cp checkpoint.Checkpoint) error {
	cp.UpdatedAt = time.Now().UTC()
	failpoint.Hit("before-checkpoint")
	if err := store.Save(ctx, cp); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	failpoint.Hit("after-checkpoint")
	r.m.CheckpointLSN.Set(float64(cp.LSN))
	return nil
}
