package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/internal/failpoint"
	"github.com/pgoutbox/pgoutbox/ledger"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// maxTxnsInFlight bounds committed transactions waiting for acks; with many
// transactions of one event each, the event limit is reached first.
const maxTxnsInFlight = 1 << 16

// eosSetupTimeout bounds the exactly-once set-up (fencing, the checkpoint topic and
// its record, which may wait for another producer's transaction to end).
const eosSetupTimeout = 90 * time.Second

// stopError is an error met while stopping after SIGTERM: events left unconfirmed,
// or the final confirm failed. Unlike errors caused by the stop itself, it is
// reported.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

// session runs one replication connection until it fails or ctx ends: it connects,
// decides where to start, starts the producer, the report goroutine and the loop,
// and on the way out drains, confirms and closes everything it opened.
func (r *relay) session(ctx context.Context) error {
	cfg := r.cfg
	conn, err := source.Connect(ctx, cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	server, cols, err := r.prepare(ctx, conn)
	if err != nil {
		return err
	}
	store, err := OpenStore(ctx, cfg, conn)
	if err != nil {
		return permanent(err)
	}
	if pg, ok := store.(*checkpoint.PostgresStore); ok && !pg.Timelines() && !r.warnedTimeline {
		r.warnedTimeline = true
		r.log.Warn().Str("table", cfg.CheckpointTable).Str("sql", pg.AlterSQL()).
			Msg("the checkpoint table has no timeline column and this role may not add it; after a failover to a promoted standby a checkpoint ahead of the slot is trusted: run the statement as its owner")
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
	id := checkpoint.Checkpoint{Slot: cfg.Slot, SystemID: ident.SystemID, Database: server.Database, Timeline: ident.Timeline}
	facts, err := readFacts(ctx, cfg, conn, store, id)
	if err != nil {
		return err
	}
	plan, err := planStart(facts)
	if err != nil {
		return err
	}
	for _, n := range plan.Notes {
		r.log.Warn().Str("slot", cfg.Slot).Msg(n)
	}
	start, bf, err := r.carryOut(ctx, conn, stream, store, id, plan, server.Version)
	if err != nil {
		return err
	}

	mapping := cfg.Mapping
	if len(mapping.Tables) == 0 {
		mapping.Tables = []string{"message.outbox"} // tableless: the table mapper never matches
	}
	rows, err := outbox.NewMapper(mapping)
	if err != nil {
		return permanent(err)
	}
	for table, c := range cols {
		rows.SetColumns(table, columnInfo(c))
	}
	var msgs *outbox.MessageMapper
	if cfg.MessagesPrefix != "" {
		if msgs, err = outbox.NewMessageMapper(mapping); err != nil {
			return permanent(err)
		}
	}
	prod, err := r.newProducer()
	if err != nil {
		return permanent(err)
	}
	defer prod.Close()
	r.m.BrokersUp.Set(1)
	r.m.Ready("kafka")
	prod.StateChanged = func(up bool, reason string) {
		if up {
			r.m.BrokersUp.Set(1)
			r.m.Ready("kafka")
		} else {
			r.m.BrokersUp.Set(0)
			r.m.NotReady("kafka", reason)
		}
	}

	led := ledger.New(cfg.MaxInFlight, maxTxnsInFlight)
	led.Reset(start.LSN)
	reps := &reports{led: led, m: r.m, log: r.log, exactlyOnce: cfg.ExactlyOnce}
	l := &loop{
		cfg: loopConfig{
			statusInterval:  cfg.StatusInterval,
			maxInFlight:     cfg.MaxInFlight,
			receiveTimeout:  r.receiveTimeout(ctx, conn),
			deadLetter:      cfg.OnError == OnErrorDeadLetter,
			deadLetterTopic: cfg.DeadLetterTopic,
			deadLetterMax:   deadLetterMax(cfg.Kafka.Properties),
			messagesPrefix:  cfg.MessagesPrefix,
			pubCheckEvery:   publicationChecks * cfg.StatusInterval,
			txnHeaders:      cfg.TransactionHeaders,
		},
		clock: realClock{}, log: r.log, m: r.m,
		stream: stream, prod: prod, led: led, com: ackCommitter{}, store: store,
		dec: decoder.New(), rows: rows, msgs: msgs,
		poison: r.iso.poison, isolateUntil: r.iso.until,
		cp: start, backlog: bf != nil,
		acks: ackWatch{last: reps.lastReport},
	}
	if tables := cfg.Mapping.Tables; len(tables) > 0 {
		l.pubOK = func(ctx context.Context) error {
			for _, table := range tables {
				if err := checkPublication(ctx, conn, cfg.Publication, table); err != nil {
					return err
				}
			}
			return nil
		}
	}
	guarded, err := syncGuard(ctx, cfg.SyncGuard, conn)
	if err != nil {
		return err
	}
	if guarded {
		l.guard = &snapshotGuard{snapshot: conn.CurrentSnapshot}
		if !r.loggedGuard {
			r.loggedGuard = true
			r.log.Info().Str("sync_guard", cfg.SyncGuard).Msg("sync guard on: each transaction is published once it is visible on the primary (its synchronous standbys confirmed it)")
		}
	}
	if cfg.Mapping.NeedsColumnInfo() {
		// A Relation message follows a schema change: read NOT NULL again.
		l.columns = func(ctx context.Context, table string) ([]outbox.ColumnInfo, error) {
			c, err := conn.Columns(ctx, table)
			return columnInfo(c), err
		}
	}
	// Stream now, before the exactly-once set-up, so this instance holds the slot
	// when it fences others; a backfill (or one to resume) streams after it.
	resume := plan.Action == startResumeBackfill
	if bf == nil && !resume {
		if err := stream.Start(ctx, cfg.Slot, start.LSN, r.startOptions()); err != nil {
			return err
		}
	}
	if cfg.ExactlyOnce {
		// Only now, holding the slot, may this instance fence the producer of
		// another: a standby that did it while waiting would stop the active one.
		keep := func() error {
			r.m.Progress()
			if bf != nil || resume {
				return nil // not streaming yet
			}
			return stream.SendStatus(start.LSN, false)
		}
		c, err := r.startExactlyOnce(ctx, prod, id, start.LSN, keep)
		if err != nil {
			return err
		}
		l.com = c
		if resume {
			if start, bf, err = r.resumeBackfill(ctx, stream, store, start, plan.LSN, c.committed, server.Version); err != nil {
				return err
			}
			l.cp, l.backlog = start, bf != nil
			led.Reset(start.LSN)
			if bf == nil {
				if err := stream.Start(ctx, cfg.Slot, start.LSN, r.startOptions()); err != nil {
					return err
				}
			}
		}
	}

	// The loop ends with ctx, or when the report goroutine fails.
	reportsCtx, stopReports := context.WithCancel(context.Background())
	defer stopReports()
	g, gctx := errgroup.WithContext(reportsCtx)
	g.Go(func() error { return prod.Run(gctx, reps.handle) })
	lctx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	defer context.AfterFunc(gctx, stopLoop)()
	defer context.AfterFunc(lctx, stream.Interrupt)()

	r.streamed = true
	r.m.StandingBy(false)
	r.m.Streaming.Set(1)
	defer r.m.Streaming.Set(0)
	r.m.CheckpointLSN.Set(float64(start.LSN))
	r.m.Confirmed(start.LSN, time.Time{})
	r.m.Ready("streaming")
	defer r.m.NotReady("streaming", "stopping")

	var loopErr error
	if bf != nil {
		loopErr = l.backfill(lctx, conn, bf, cfg)
		if loopErr == nil && lctx.Err() == nil {
			if loopErr = stream.Start(ctx, cfg.Slot, l.cp.LSN, r.startOptions()); loopErr == nil {
				l.backlog = false
			}
		}
	}
	if loopErr == nil && lctx.Err() == nil {
		r.log.Info().Str("slot", cfg.Slot).Stringer("lsn", l.cp.LSN).Str("server", source.Describe(cfg.PostgresURL)).
			Strs("tables", cfg.Mapping.Tables).Msg("streaming")
		loopErr = l.run(lctx)
	}
	return r.stop(ctx, l, reps, g, gctx, stopReports, loopErr)
}

// stop ends a session: it publishes what the loop produced when stopping on purpose,
// waits for the reports of what is in flight, confirms what is safe (even after a
// failure: it is all acknowledged), stops the report goroutine and says how the
// session ended.
func (r *relay) stop(ctx context.Context, l *loop, reps *reports, g *errgroup.Group, gctx context.Context, stopReports func(), loopErr error) error {
	cfg := r.cfg
	shutdown := ctx.Err() != nil
	// The stop must not hang on a stuck server or broker, nor end with ctx.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if shutdown && loopErr == nil && gctx.Err() == nil && l.com.pending() {
		if l.backlog {
			// An interrupted backfill is not published: the next start redoes it.
			// Aborting now rather than at the next start's InitTransactions keeps
			// read_committed consumers of these partitions from waiting for it.
			reps.abandoned.Store(true)
			loopErr = l.com.abort(sctx)
		} else {
			// Publish what was read, even half a PostgreSQL transaction: the
			// checkpoint record says how much of it is in Kafka.
			loopErr = l.commit(sctx)
		}
	}
	var drainErr, confirmErr error
	if gctx.Err() == nil && !reps.abandoned.Load() {
		drainErr = l.drain(sctx, gctx.Done(), cfg.ShutdownTimeout)
	}
	if loopErr == nil || !errors.Is(loopErr, checkpoint.ErrStale) {
		confirmErr = l.confirm(sctx)
		if errors.Is(confirmErr, errLeaveIsolation) {
			loopErr, confirmErr = cmp(loopErr, confirmErr), nil
		}
	}
	stopReports()
	reportErr := g.Wait()

	if sus := reps.refusedBatch(); len(sus) > 0 {
		if err := r.refused(sus, cfg.ExactlyOnce, l.led.Newest()); err != nil {
			return err
		}
	}
	switch {
	case reportErr != nil:
		if sink.Fatal(reportErr) {
			r.m.ProducerErrors.WithLabelValues("fatal").Inc()
			return fmt.Errorf("kafka producer failed, rebuilding it and resuming from the checkpoint: %w", reportErr)
		}
		return reportErr
	case loopErr != nil:
		return loopErr
	case drainErr != nil:
		return &stopError{drainErr}
	case confirmErr != nil && shutdown:
		return &stopError{fmt.Errorf("final confirm: %w", confirmErr)}
	case confirmErr != nil:
		return confirmErr
	}
	if shutdown {
		r.log.Info().Stringer("confirmed", l.cp.LSN).Msg("stopped; every acknowledged event is confirmed")
	}
	return nil
}

// cmp returns the first non-nil error.
func cmp(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// CheckStart reports what would keep pgoutbox from starting — a gap, a slot it
// cannot use, an unfinished backfill — reading the same facts and deciding with the
// same rule (planStart) as a starting relay; pgoutbox status shows it. A slot active
// in another process is no problem. The timeline is not compared: reading it needs a
// replication connection.
func CheckStart(ctx context.Context, cfg Config, conn *source.Conn, store checkpoint.Store, systemID, database string) error {
	id := checkpoint.Checkpoint{Slot: cfg.Slot, SystemID: systemID, Database: database}
	f, err := readFacts(ctx, cfg, conn, store, id)
	if err != nil {
		return err
	}
	_, err = planStart(f)
	var active *source.ErrSlotActive
	if errors.As(err, &active) {
		return nil
	}
	return err
}

// readFacts reads the slot and then the checkpoint (see startFacts for why in that
// order).
func readFacts(ctx context.Context, cfg Config, conn *source.Conn, store checkpoint.Store, id checkpoint.Checkpoint) (startFacts, error) {
	f := startFacts{ID: id, AcceptGap: cfg.AcceptGap, Backfill: cfg.Backfill, ExactlyOnce: cfg.ExactlyOnce}
	var err error
	if f.Slot, f.SlotFound, err = conn.Slot(ctx, cfg.Slot); err != nil {
		return f, err
	}
	cp, err := store.Load(ctx, cfg.Slot)
	switch {
	case err == nil:
		f.CP, f.CPFound = cp, true
	case errors.Is(err, checkpoint.ErrNotFound):
	default:
		return f, permanent(fmt.Errorf("load checkpoint from %s: %w; pgoutbox will not start afresh: restore the file from a backup "+
			"(the slot is then ahead of it, a gap: run once with --accept-gap; what was confirmed after the backup is not published again), "+
			"or if it is lost for good move it away (pgoutbox then starts from the slot's confirmed position; nothing is lost while the slot exists)", store.Describe(), err))
	}
	return f, nil
}

// carryOut does what the plan says before streaming, and returns the checkpoint to
// start from and the backfill to run first, if any.
func (r *relay) carryOut(ctx context.Context, conn *source.Conn, stream *source.Stream, store checkpoint.Store, id checkpoint.Checkpoint,
	plan startPlan, serverVersion int) (checkpoint.Checkpoint, *backfillPlan, error) {
	cfg := r.cfg
	start := id
	var bf *backfillPlan
	switch plan.Action {
	case startResumeBackfill:
		start.LSN = backfillPending // nothing is confirmable before the backfill is done
		return start, nil, nil
	case startRecreate:
		if err := stream.DropSlot(ctx, cfg.Slot); err != nil {
			return start, nil, fmt.Errorf("drop slot %q: %w", cfg.Slot, err)
		}
		fallthrough
	case startCreate:
		created, err := stream.CreateSlot(ctx, cfg.Slot, serverVersion, source.SlotOptions{Failover: cfg.SlotFailover, ExportSnapshot: plan.Backfill})
		if err != nil {
			return start, nil, err
		}
		r.log.Info().Str("slot", cfg.Slot).Stringer("consistent_point", created.ConsistentPoint).Msg("replication slot created")
		start.LSN = created.ConsistentPoint
		if plan.Backfill {
			// Until the backfill is done, the checkpoint says so: a crash
			// restarts it instead of streaming past rows never published.
			bf = &backfillPlan{snapshot: created.Snapshot, consistent: created.ConsistentPoint}
			start.LSN = backfillPending
		}
	case startStream:
		start.LSN = plan.LSN
		if cfg.SlotFailover {
			failover, err := conn.SlotFailover(ctx, cfg.Slot, serverVersion)
			if err != nil {
				return start, nil, err
			}
			if !failover {
				if err := stream.AlterSlotFailover(ctx, cfg.Slot); err != nil {
					return start, nil, err
				}
				r.log.Info().Str("slot", cfg.Slot).Msg("slot is now a failover slot")
			}
		}
	}
	if plan.Save {
		start.UpdatedAt = time.Now().UTC()
		save := store.Save
		if plan.Force {
			save = store.Force
		}
		failpoint.Hit("before-checkpoint")
		if err := save(ctx, start); err != nil {
			return start, nil, fmt.Errorf("save checkpoint: %w", err)
		}
		failpoint.Hit("after-checkpoint")
		r.m.CheckpointLSN.Set(float64(start.LSN))
	}
	return start, bf, nil
}

// newProducer is the one place a session's producer is made: transactional with
// --exactly-once, one event per request while isolating a refused event.
func (r *relay) newProducer() (*sink.Producer, error) {
	kcfg := r.cfg.Kafka
	kcfg.Isolate = r.iso.until != 0
	if r.cfg.ExactlyOnce {
		return sink.NewTransactional(kcfg, r.cfg.TxnID(), r.log)
	}
	// A dead-letter record needs the refused message's key and value back.
	kcfg.ReportFields = r.cfg.OnError == OnErrorDeadLetter
	return sink.New(kcfg, nil, r.log)
}

// startExactlyOnce fences older instances, makes sure of the checkpoint topic, reads
// the newest checkpoint record and returns the committer that goes on from it.
func (r *relay) startExactlyOnce(ctx context.Context, prod *sink.Producer, id checkpoint.Checkpoint, start source.LSN, keepAlive func() error) (*txnCommitter, error) {
	cfg := r.cfg
	c := &txnCommitter{prod: prod, clock: realClock{}, topic: cfg.CheckpointTopic, key: cfg.TxnID(), id: id,
		interval: cfg.TxnInterval, maxEvents: cfg.TxnMaxEvents, linger: lingerAfterEvent, keepEvery: cfg.StatusInterval}
	sctx, cancel := context.WithTimeout(ctx, eosSetupTimeout)
	defer cancel()
	var rec checkpoint.Checkpoint
	var found bool
	err := waitFor(sctx, realClock{}, cfg.StatusInterval, keepAlive, func(ctx context.Context) error {
		if err := prod.InitTransactions(ctx); err != nil {
			return r.eosSetup(err)
		}
		if err := prod.EnsureCheckpointTopic(ctx, cfg.CheckpointTopic); err != nil {
			return r.eosSetup(err)
		}
		// Before reading: a transaction the broker failed to abort would hold
		// back what read_committed can read (see EndStaleTransaction).
		if err := prod.EndStaleTransaction(ctx, cfg.CheckpointTopic, cfg.TxnID(), id); err != nil {
			return err
		}
		var err error
		if rec, found, err = prod.ReadCheckpoint(ctx, cfg.Kafka, cfg.CheckpointTopic, cfg.TxnID()); err != nil {
			return r.eosSetup(err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rule, err := planSkip(rec, found, id, cfg.AcceptGap)
	if err != nil {
		return nil, fmt.Errorf("checkpoint topic %s: %w", cfg.CheckpointTopic, err)
	}
	c.rule = rule
	c.committed = max(rule.Before, start)
	if found && rule.Before != 0 {
		r.log.Info().Str("topic", cfg.CheckpointTopic).Stringer("lsn", rec.LSN).Int("partial_events", rec.PartialEvents).
			Msg("exactly-once: events up to the checkpoint record are in Kafka and will be skipped")
	} else if found {
		r.log.Warn().Str("topic", cfg.CheckpointTopic).Msg("--accept-gap: ignoring a checkpoint record of another slot, database or cluster")
	}
	return c, nil
}

// eosSetup makes a missing ACL of the exactly-once mode permanent, with what to grant;
// other errors (Kafka down) are retried.
func (r *relay) eosSetup(err error) error {
	var setup *sink.SetupError
	if errors.As(err, &setup) {
		return permanent(err)
	}
	if !sink.Unauthorized(err) {
		return err
	}
	return permanent(fmt.Errorf("%w; --exactly-once needs the Kafka principal to have WRITE and DESCRIBE on TransactionalId %q, "+
		"and READ, WRITE and DESCRIBE (CREATE unless it exists) on topic %q", err, r.cfg.TxnID(), r.cfg.CheckpointTopic))
}

// receiveTimeout is how long the loop accepts silence from the server: its
// wal_sender_timeout, but at least a few status intervals. A walsender busy decoding
// a transaction that sends pgoutbox nothing still reads pgoutbox's status updates,
// and answers the one asking for a reply, every wal_sender_timeout/2
// (WalSndUpdateProgress, walsender.c), so a live server is never silent that long.
// With wal_sender_timeout 0 it never has to: then there is no receive timeout (TCP
// keepalives still notice a dead peer, slowly).
func (r *relay) receiveTimeout(ctx context.Context, conn *source.Conn) time.Duration {
	if r.cfg.ReceiveTimeout != 0 {
		return max(r.cfg.ReceiveTimeout, 0)
	}
	t, err := conn.WalSenderTimeout(ctx)
	switch {
	case err != nil:
		t = time.Minute // PostgreSQL's default
	case t == 0:
		return 0
	}
	return max(t, 5*r.cfg.StatusInterval)
}

// startOptions are the pgoutput options of every START_REPLICATION.
func (r *relay) startOptions() source.StartOptions {
	return source.StartOptions{Publication: r.cfg.Publication, Messages: r.cfg.MessagesPrefix != ""}
}
