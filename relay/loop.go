package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/internal/failpoint"
	"github.com/pgoutbox/pgoutbox/ledger"
	"github.com/pgoutbox/pgoutbox/metrics"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// earlyConfirmGap is the shortest time between two confirms made early because the
// window is half full: each costs an fsync, and acks that trickle in one by one must
// not cost one each.
const earlyConfirmGap = 20 * time.Millisecond

// saveTimeout bounds one checkpoint save: a stuck store must not hold the loop (and
// SIGTERM) for ever.
const saveTimeout = 10 * time.Second

// loopConfig is what the loop needs of the configuration.
type loopConfig struct {
	statusInterval time.Duration
	maxInFlight    int
	// receiveTimeout: no message from the server for this long (it answers every
	// status update that asks for a reply) means the connection is dead. 0: off.
	receiveTimeout  time.Duration
	deadLetter      bool // --on-error=dead-letter
	deadLetterTopic string
	deadLetterMax   int // largest payload a dead-letter record carries whole
	messagesPrefix  string
	// pubCheckEvery: how often the publication is checked; 0: never.
	pubCheckEvery time.Duration
	// txnHeaders adds pgoutbox.lsn, pgoutbox.xid and pgoutbox.index to every
	// record (--transaction-headers).
	txnHeaders bool
}

// saver saves the checkpoint durably.
type saver interface {
	Save(ctx context.Context, cp checkpoint.Checkpoint) error
}

// rowMapper maps rows of the outbox tables (*outbox.Mapper).
type rowMapper interface {
	Matches(rel *decoder.Relation) bool
	SetColumns(table string, cols []outbox.ColumnInfo)
	Bind(rel *decoder.Relation) error
	Map(rel *decoder.Relation, values []decoder.Value) (*outbox.Record, error)
	Config() outbox.Config
}

// loop is the replication loop, on the session's one goroutine: the only code that
// reads the stream, produces to Kafka and confirms. Each turn it settles what the
// delivery reports left in the ledger (refusals), commits when the committer says so,
// confirms when a status update is due, waits while the ledger is full, or receives,
// decodes, maps and produces one message. Every wait has a deadline in the future.
type loop struct {
	cfg    loopConfig
	clock  clock
	log    zerolog.Logger
	m      *metrics.Metrics
	stream stream
	prod   producer
	led    *ledger.Ledger
	com    committer
	store  saver
	dec    *decoder.Decoder
	rows   rowMapper
	msgs   *outbox.MessageMapper // nil unless --messages-prefix
	poison map[string]outbox.RowError
	pubOK  func(ctx context.Context) error // checks the publication; nil: never
	// columns reads a table's columns from the catalog again when its Relation
	// message comes (a schema change); nil when the mapping does not need them.
	columns func(ctx context.Context, table string) ([]outbox.ColumnInfo, error)
	backlog bool // a backfill is running: no stream yet
	// guard, when set, holds each transaction back until it is visible on the
	// primary (--sync-guard; see syncguard.go).
	guard visibility
	// acks watches for deliveries that stopped (see ackwatch.go).
	acks ackWatch

	// isolateUntil, when set, is the newest token of a refused batch: once the
	// checkpoint passes it the session ends so the next batches again.
	isolateUntil source.LSN

	cp        checkpoint.Checkpoint // the last saved checkpoint
	txn       openTxn
	inTxn     bool
	lastEnd   source.LSN // end LSN of the newest transaction read whole
	serverEnd source.LSN
	// saveFailed is the error of the last failed checkpoint save, until one works.
	saveFailed error

	nextStatus, lastConfirm, nextPubCheck time.Time
	// silent is how long the loop has waited in Receive since the server last
	// sent anything (time spent waiting on Kafka does not count: the loop was not
	// listening); heard: the server sent something since the last status update.
	silent time.Duration
	heard  bool

	msg    sink.Message // reused by publish
	txnHdr []byte       // backs the transaction headers of msg
}

// openTxn is the PostgreSQL transaction being read.
type openTxn struct {
	final      source.LSN
	commitTime time.Time
	xid        uint32
	// index counts its events read so far, those skipped as already in Kafka
	// included: the exactly-once record counts the same way.
	index int
}

// errLeaveIsolation ends a session that sent one event per request once the
// checkpoint is past the refused batch, so the next session batches again.
var errLeaveIsolation = errors.New("past the refused batch; batching events again")

// start prepares the loop's clocks; run calls it, tests may too.
func (l *loop) start() {
	now := l.clock.Now()
	l.nextStatus = now.Add(l.cfg.statusInterval)
	l.lastConfirm, l.silent = now, 0
	if l.cfg.pubCheckEvery > 0 {
		l.nextPubCheck = now.Add(l.cfg.pubCheckEvery)
	}
	l.lastEnd = max(l.lastEnd, l.cp.LSN)
	if l.acks.last != nil {
		l.m.Ready("acks") // a new producer: the last session's stall is history
	}
}

// run streams until ctx ends (nil) or something fails.
func (l *loop) run(ctx context.Context) error {
	l.start()
	for ctx.Err() == nil {
		if err := l.turn(ctx); err != nil {
			if errors.Is(err, source.ErrInterrupted) {
				return nil // the session is ending: ctx says why
			}
			return err
		}
	}
	return nil
}

// turn is one step of the loop.
func (l *loop) turn(ctx context.Context) error {
	if err := l.settle(ctx); err != nil {
		return err
	}
	now := l.clock.Now()
	full := l.led.Full()
	if due, _ := l.com.due(now, full); due {
		return l.commit(ctx)
	}
	if !now.Before(l.nextStatus) || l.confirmEarly(now, full) {
		if err := l.confirm(ctx); err != nil {
			return err
		}
		return l.checkPublication(ctx, now)
	}
	if full {
		// Backpressure: Kafka is slow or down. Stop reading (the walsender waits
		// on TCP) but keep confirming so it does not time out.
		return l.waitRoom(ctx)
	}
	if l.cfg.receiveTimeout > 0 && l.silent > l.cfg.receiveTimeout {
		return fmt.Errorf("nothing from PostgreSQL for %s although pgoutbox asked for a reply with every status update: the connection is presumed dead (a network partition?); reconnecting",
			l.silent.Round(time.Second))
	}
	deadline := l.nextStatus
	if _, next := l.com.due(now, false); !next.IsZero() && next.Before(deadline) {
		deadline = next
	}
	msg, err := l.stream.Receive(deadline)
	switch {
	case errors.Is(err, source.ErrTimeout):
		l.silent += l.clock.Now().Sub(now)
		return nil
	case err != nil:
		return err
	}
	l.silent, l.heard = 0, true
	l.m.Progress()
	if msg.ServerWALEnd > l.serverEnd {
		l.serverEnd = msg.ServerWALEnd
	}
	if msg.Keepalive {
		// With nothing in flight the server's position is safe: an idle outbox in
		// a busy database must not pin WAL. The ledger decides, never an LSN
		// comparison.
		l.led.Advance(msg.ServerWALEnd)
		if msg.ReplyRequested {
			return l.confirm(ctx)
		}
		return nil
	}
	return l.handle(ctx, msg)
}

// confirmEarly: under load, confirm before the status interval so that what a crash
// would publish again stays within the window.
func (l *loop) confirmEarly(now time.Time, full bool) bool {
	if l.saveFailed != nil {
		return false // retried with the status updates, not on every turn
	}
	if l.led.Unconfirmed() < l.cfg.maxInFlight/2 {
		return false
	}
	if now.Sub(l.lastConfirm) < earlyConfirmGap && !full {
		return false
	}
	return l.com.confirmable(l.led.Safe()) > l.cp.LSN
}

// waitRoom waits for a delivery report, the next status update or the end of ctx.
func (l *loop) waitRoom(ctx context.Context) error {
	l.m.Progress()
	sleep(l.clock, l.nextStatus.Sub(l.clock.Now()), l.led.Changed(), ctx.Done())
	return nil
}

// commit commits the committer's open transaction, mid-way through a PostgreSQL
// transaction if need be.
func (l *loop) commit(ctx context.Context) error {
	at := streamPos{end: l.lastEnd}
	if l.inTxn {
		at.final, at.events = l.txn.final, l.txn.index
	}
	return l.com.commit(ctx, at, l.keepAlive(ctx))
}

// keepAlive returns what a long wait calls to keep the walsender hearing from
// pgoutbox: a confirm whenever a status update is due.
func (l *loop) keepAlive(ctx context.Context) func() error {
	return func() error {
		l.m.Progress()
		if l.clock.Now().Before(l.nextStatus) {
			return nil
		}
		return l.confirm(ctx)
	}
}

// confirm saves the confirmable position to the checkpoint and then confirms it to
// PostgreSQL. The order matters: a checkpoint ahead of the slot is harmless (the
// next start takes the newer of the two), a slot ahead of a lost checkpoint is a gap.
// A checkpoint that cannot be saved (a full or read-only disk) confirms nothing new
// until it can: the status update repeats the last saved position, the walsender
// stays alive, the ledger fills up and reading pauses.
func (l *loop) confirm(ctx context.Context) error {
	now := l.clock.Now()
	l.lastConfirm, l.nextStatus = now, now.Add(l.cfg.statusInterval)
	l.checkAcks(now)
	safe := l.com.confirmable(l.led.Safe())
	if safe > l.cp.LSN {
		cp := l.cp
		cp.LSN = safe
		sctx, cancel := context.WithTimeout(ctx, saveTimeout)
		err := l.save(sctx, cp)
		cancel()
		switch {
		case errors.Is(err, checkpoint.ErrStale):
			return err
		case err != nil:
			if l.saveFailed == nil {
				l.log.Error().Err(err).Msg("cannot save the checkpoint; confirming nothing new until it can be saved")
				l.m.NotReady("checkpoint", "checkpoint: "+err.Error())
			}
			l.saveFailed = err
			l.m.CheckpointErrors.Inc()
		default:
			if l.saveFailed != nil {
				l.log.Info().Stringer("lsn", cp.LSN).Msg("the checkpoint is saved again")
				l.m.Ready("checkpoint")
				l.saveFailed = nil
			}
			l.cp = cp
		}
	}
	if l.backlog {
		return nil // no stream yet
	}
	if err := l.stream.SendStatus(l.cp.LSN, !l.heard); err != nil {
		return err
	}
	l.heard = false
	failpoint.Hit("after-confirm")
	at, err := l.led.Confirm(l.cp.LSN)
	if err != nil {
		return err
	}
	l.m.Confirmed(l.cp.LSN, at)
	l.m.InFlight.Set(float64(l.led.InFlight()))
	l.m.LagBytes.Set(float64(max(l.serverEnd, l.cp.LSN) - l.cp.LSN))
	if l.isolateUntil != 0 && l.cp.LSN > l.isolateUntil {
		return errLeaveIsolation
	}
	return nil
}

// save writes a checkpoint durably, between the failpoints crash tests use.
func (l *loop) save(ctx context.Context, cp checkpoint.Checkpoint) error {
	cp.UpdatedAt = l.clock.Now().UTC()
	failpoint.Hit("before-checkpoint")
	if err := l.store.Save(ctx, cp); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	failpoint.Hit("after-checkpoint")
	l.m.CheckpointLSN.Set(float64(cp.LSN))
	return nil
}

// checkPublication stops streaming when the outbox table left the publication.
// Dropping and re-creating the table does that silently: PostgreSQL then sends
// nothing of the new table, and pgoutbox would wait forever for events.
func (l *loop) checkPublication(ctx context.Context, now time.Time) error {
	if l.pubOK == nil || l.nextPubCheck.IsZero() || now.Before(l.nextPubCheck) {
		return nil
	}
	l.nextPubCheck = now.Add(l.cfg.pubCheckEvery)
	cctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	return l.pubOK(cctx)
}

// handle processes one pgoutput message.
func (l *loop) handle(ctx context.Context, msg *source.Message) error {
	ev, err := l.dec.Decode(msg.Data)
	if err != nil {
		// The same bytes come back on every restart: stop with the position.
		return permanent(fmt.Errorf("decode replication message at %s: %w", msg.WALStart, err))
	}
	l.m.ReceivedLSN.Set(float64(msg.WALStart))
	switch ev.Type {
	case decoder.TypeBegin:
		if l.guard != nil {
			if err := l.waitVisible(ctx, ev.Begin.Xid); err != nil {
				return err
			}
		}
		err = l.begin(ev.Begin)
	case decoder.TypeCommit:
		err = l.commitTxn(ev.Commit)
	case decoder.TypeRelation:
		if l.rows.Matches(ev.Relation) {
			if l.columns != nil {
				table := ev.Relation.QualifiedName()
				cctx, cancel := context.WithTimeout(ctx, saveTimeout)
				cols, err := l.columns(cctx, table)
				cancel()
				if err != nil {
					return fmt.Errorf("read the columns of %s: %w", table, err)
				}
				l.rows.SetColumns(table, cols)
			}
			if err := l.rows.Bind(ev.Relation); err != nil {
				return permanent(fmt.Errorf("outbox table changed: %w", err))
			}
		}
	case decoder.TypeInsert:
		if !l.rows.Matches(ev.Relation) {
			l.m.SkippedChanges.WithLabelValues("other_table").Inc()
			return nil
		}
		if l.skip() {
			return nil // already in Kafka, says the checkpoint record
		}
		rec, err := l.rows.Map(ev.Relation, ev.Values)
		return l.emit(ctx, rec, err, "outbox table changed")
	case decoder.TypeUpdate:
		l.m.SkippedChanges.WithLabelValues(ev.Type.String()).Inc()
		if l.rows.Matches(ev.Relation) {
			return l.invalidOp(ev.Relation, msg.WALStart)
		}
	case decoder.TypeDelete, decoder.TypeTruncate:
		l.m.SkippedChanges.WithLabelValues(ev.Type.String()).Inc()
	case decoder.TypeMessage:
		return l.message(ctx, &ev.Message)
	}
	if err != nil {
		return fmt.Errorf("at %s: %w", msg.WALStart, err)
	}
	return nil
}

// invalidOp applies --op-invalid-behavior (Debezium's table.op.invalid.behavior) to
// an UPDATE of an outbox table, which a publication that publishes updates sends:
// an outbox is insert-only, so it is skipped with a warning or an error logged, or
// stops pgoutbox.
func (l *loop) invalidOp(rel *decoder.Relation, at source.LSN) error {
	switch l.rows.Config().InvalidOp {
	case outbox.OpFatal:
		return permanent(fmt.Errorf("an UPDATE of outbox table %s at %s (--op-invalid-behavior=fatal); an outbox is insert-only: publish = 'insert' keeps updates out of the stream", rel.QualifiedName(), at))
	case outbox.OpError:
		l.log.Error().Str("table", rel.QualifiedName()).Stringer("lsn", at).Msg("skipping an UPDATE of an outbox table; an outbox is insert-only")
	default:
		l.log.Warn().Str("table", rel.QualifiedName()).Stringer("lsn", at).Msg("skipping an UPDATE of an outbox table; an outbox is insert-only")
	}
	return nil
}

func (l *loop) begin(b decoder.Begin) error {
	l.txn = openTxn{final: b.FinalLSN, commitTime: b.CommitTime, xid: b.Xid}
	l.inTxn = true
	return l.led.Begin(b.FinalLSN, b.CommitTime)
}

func (l *loop) commitTxn(c decoder.Commit) error {
	if err := l.led.Commit(c.EndLSN); err != nil {
		return err
	}
	l.inTxn = false
	l.lastEnd = c.EndLSN
	l.m.Transactions.Inc()
	return nil
}

// skip counts one event of the open transaction and reports whether Kafka has it.
func (l *loop) skip() bool {
	l.txn.index++
	return l.com.skip(l.txn.final, l.txn.index)
}

// message publishes a logical decoding message of the tableless outbox. Only
// transactional ones: they arrive inside their transaction, in order with its
// inserts, and only if it commits. A non-transactional message is sent at once, even
// if its transaction later aborts, so it cannot be an outbox event.
func (l *loop) message(ctx context.Context, msg *decoder.LogicalMessage) error {
	if l.msgs == nil || msg.Prefix != l.cfg.messagesPrefix {
		l.m.SkippedChanges.WithLabelValues("message").Inc()
		return nil
	}
	if !msg.Transactional || !l.inTxn {
		l.m.SkippedChanges.WithLabelValues("non_transactional_message").Inc()
		l.log.Debug().Str("prefix", msg.Prefix).Stringer("lsn", msg.LSN).Msg("skipping a non-transactional message")
		return nil
	}
	if l.skip() {
		return nil
	}
	rec, err := l.msgs.Map(msg.Content)
	return l.emit(ctx, rec, err, "message at "+msg.LSN.String())
}

// emit publishes a mapped event, or applies --on-error to one that cannot be
// published: a row the mapping refuses, or one Kafka refused before. Any other
// mapping error means the outbox no longer matches the configuration.
func (l *loop) emit(ctx context.Context, rec *outbox.Record, err error, what string) error {
	if err != nil {
		var rowErr *outbox.RowError
		if errors.As(err, &rowErr) {
			return l.badRow(ctx, rowErr)
		}
		return permanent(fmt.Errorf("%s: %w", what, err))
	}
	if row, ok := l.poisoned(rec); ok {
		return l.badRow(ctx, row)
	}
	return l.publish(ctx, rec)
}

// publish produces one record of the open transaction.
func (l *loop) publish(ctx context.Context, rec *outbox.Record) error {
	if err := l.com.begin(); err != nil {
		return err
	}
	token, err := l.led.Add()
	if err != nil {
		return err
	}
	m := &l.msg
	m.Topic, m.Key, m.Value, m.ID = rec.Topic, rec.Key, rec.Value, rec.ID
	m.Token, m.Timestamp, m.Committed, m.DeadLetter = token, l.txn.commitTime, l.txn.commitTime, false
	m.Partition, m.Partitioned = rec.Partition, rec.Partition >= 0
	if !rec.Timestamp.IsZero() {
		m.Timestamp = rec.Timestamp
	}
	m.Headers = m.Headers[:0]
	for _, h := range rec.Headers {
		m.Headers = append(m.Headers, sink.Header{Key: h.Key, Value: h.Value})
	}
	if l.cfg.txnHeaders {
		l.transactionHeaders(m)
	}
	err = l.produce(ctx, m)
	switch {
	case err == nil:
		l.com.produced()
		return nil
	case sink.Permanent(err):
		// librdkafka refused it before sending (too large for the producer's
		// message.max.bytes, say): the row's fault, under --on-error.
		l.m.ProducerErrors.WithLabelValues("message").Inc()
		return l.refusedNow(ctx, token, rowError(rec, errors.Unwrap(err).Error()))
	default:
		_ = l.led.Cancel(token) // the loop stops: the transaction must never be safe
		return err
	}
}

// transactionHeaders adds to m where its event stands in the stream, as Debezium's
// provide.transaction.metadata does: pgoutbox.lsn, the transaction's commit LSN
// (X/X); pgoutbox.xid; pgoutbox.index, the event's 0-based position among the
// transaction's events. A replay gives an event the same three values, so consumers
// can order across partitions and dedupe by (lsn, index).
func (l *loop) transactionHeaders(m *sink.Message) {
	b := append(l.txnHdr[:0], l.txn.final.String()...)
	lsn := len(b)
	b = strconv.AppendUint(b, uint64(l.txn.xid), 10)
	xid := len(b)
	b = strconv.AppendInt(b, int64(l.txn.index-1), 10)
	l.txnHdr = b
	m.Headers = append(m.Headers,
		sink.Header{Key: "pgoutbox.lsn", Value: b[:lsn:lsn]},
		sink.Header{Key: "pgoutbox.xid", Value: b[lsn:xid:xid]},
		sink.Header{Key: "pgoutbox.index", Value: b[xid:]})
}

// produce hands m to librdkafka, waiting while its queue is full (Kafka slow or down,
// large payloads) and keeping the walsender alive meanwhile.
func (l *loop) produce(ctx context.Context, m *sink.Message) error {
	for {
		err := l.prod.Produce(m)
		if !errors.Is(err, sink.ErrQueueFull) {
			return err
		}
		if err := l.keepAlive(ctx)(); err != nil {
			return err
		}
		sleep(l.clock, 5*time.Millisecond, l.led.Changed(), ctx.Done())
		if ctx.Err() != nil {
			return source.ErrInterrupted
		}
	}
}

// rowError describes a record Kafka cannot take, with copies of its key and payload.
func rowError(rec *outbox.Record, reason string) *outbox.RowError {
	row := &outbox.RowError{ID: string(rec.ID), Topic: rec.Topic, Reason: reason}
	if rec.Key != nil {
		row.Key = append([]byte{}, rec.Key...)
	}
	if rec.Value != nil {
		row.Payload = append([]byte{}, rec.Value...)
	}
	return row
}

// RowFailedError stops pgoutbox under --on-error=fail: the row is not confirmed, so
// a restart meets it again.
type RowFailedError struct {
	Row *outbox.RowError
}

func (e *RowFailedError) Error() string {
	return fmt.Sprintf("cannot publish %s; stopping (--on-error=fail) with nothing confirmed past it, so a restart retries this row: fix the row, the topic or the broker, or run with --on-error=dead-letter", e.Row)
}

// badRow applies --on-error to a row that cannot be published before it was
// produced: fail stops, dead-letter produces its dead-letter record instead.
func (l *loop) badRow(ctx context.Context, row *outbox.RowError) error {
	if !l.cfg.deadLetter {
		l.m.FailedEvents.Inc()
		return permanent(&RowFailedError{Row: row})
	}
	if err := l.com.begin(); err != nil {
		return err
	}
	token, err := l.led.Add()
	if err != nil {
		return err
	}
	return l.sendDeadLetter(ctx, row, token, l.txn.commitTime)
}

// refusedNow applies --on-error to an event already added to the ledger under token
// whose produce was refused.
func (l *loop) refusedNow(ctx context.Context, token source.LSN, row *outbox.RowError) error {
	if !l.cfg.deadLetter {
		_ = l.led.Cancel(token)
		l.m.FailedEvents.Inc()
		return permanent(&RowFailedError{Row: row})
	}
	return l.sendDeadLetter(ctx, row, token, l.txn.commitTime)
}

// settle applies --on-error to the events Kafka refused since the last turn: they
// are dead-lettered under the same token, or the loop stops. With fail, the session
// then drains the acks of the events before the refused one, so they are confirmed
// and a restart begins at the refused row's transaction.
func (l *loop) settle(ctx context.Context) error {
	for _, r := range l.led.TakeRefusals() {
		ref := r.Err.(*refusal)
		if !l.cfg.deadLetter {
			l.m.FailedEvents.Inc()
			return permanent(&RowFailedError{Row: ref.row})
		}
		if err := l.led.Redo(r.Token); err != nil {
			return err
		}
		if err := l.com.begin(); err != nil {
			return err
		}
		if err := l.sendDeadLetter(ctx, ref.row, r.Token, ref.committed); err != nil {
			return err
		}
	}
	return nil
}

// sendDeadLetter produces the dead-letter record for a row under the row's token,
// which is in flight in the ledger: the row's transaction is confirmed only once the
// dead-letter topic has it.
func (l *loop) sendDeadLetter(ctx context.Context, row *outbox.RowError, token source.LSN, committed time.Time) error {
	m := deadLetter(row, l.cfg.deadLetterTopic, l.cfg.deadLetterMax, token, committed)
	if err := l.produce(ctx, m); err != nil {
		_ = l.led.Cancel(token)
		if sink.Permanent(err) {
			l.m.FailedEvents.Inc()
			return permanent(fmt.Errorf("dead-letter %s: %w", row, err))
		}
		return fmt.Errorf("dead-letter %s: %w", row, err)
	}
	l.com.produced()
	l.log.Warn().Str("id", row.ID).Str("topic", row.Topic).Str("reason", row.Reason).
		Str("dead_letter_topic", l.cfg.deadLetterTopic).Msg("Kafka refused the event; sending it to the dead-letter topic")
	return nil
}

// poisoned returns the remembered refusal of the event rec, if any (see refused.go).
func (l *loop) poisoned(rec *outbox.Record) (*outbox.RowError, bool) {
	if len(l.poison) == 0 {
		return nil, false
	}
	known, ok := l.poison[string(rec.ID)]
	if !ok {
		return nil, false
	}
	row := rowError(rec, known.Reason)
	return row, true
}

// drain waits up to timeout for every event in flight to be reported, confirming
// meanwhile so the walsender does not time out. It returns early when reports ends
// (the report goroutine stopped: no more reports will come).
func (l *loop) drain(ctx context.Context, reports <-chan struct{}, timeout time.Duration) error {
	deadline := l.clock.Now().Add(timeout)
	for !l.led.Drained() {
		left := deadline.Sub(l.clock.Now())
		if left <= 0 {
			return fmt.Errorf("%d events still unacknowledged after %s; they are not confirmed and will be published again on restart", l.led.InFlight(), timeout)
		}
		fire, stop := l.clock.Timer(min(l.cfg.statusInterval, left))
		select {
		case <-l.led.Changed():
		case <-reports:
			stop()
			return nil
		case <-fire:
			if err := l.keepAlive(ctx)(); err != nil {
				return err
			}
		}
		stop()
	}
	return nil
}
