package relay

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// handle processes one pgoutput message.
func (s *session) handle(msg *source.Message) error {
	ev, err := s.dec.Decode(msg.Data)
	if err != nil {
		// The same bytes come back on every restart: stop with the position.
		return permanent(fmt.Errorf("decode replication message at %s: %w", msg.WALStart, err))
	}
	m := s.r.m
	m.ReceivedLSN.Set(float64(msg.WALStart))
	switch ev.Type {
	case decoder.TypeBegin:
		s.commitTime = ev.Begin.CommitTime
		s.openEvents = 0
		s.inTxn = true
		if s.eos != nil {
			s.eos.begin(ev.Begin.FinalLSN)
		}
		s.mu.Lock()
		err = s.tr.Begin(ev.Begin.FinalLSN)
		s.mu.Unlock()
	case decoder.TypeCommit:
		s.mu.Lock()
		err = s.tr.Commit(ev.Commit.EndLSN)
		s.mu.Unlock()
		s.commits = append(s.commits, commitAt{end: ev.Commit.EndLSN, at: ev.Commit.CommitTime, events: s.openEvents})
		s.openEvents = 0
		s.inTxn = false
		if s.eos != nil && err == nil {
			s.eos.lastComplete = ev.Commit.EndLSN
			if s.eos.open && s.eos.full(time.Now()) {
				err = s.commitKafka(false)
			}
		}
		m.Transactions.Inc()
	case decoder.TypeRelation:
		if s.mapper.Matches(ev.Relation) {
			if err := s.mapper.Bind(ev.Relation); err != nil {
				return permanent(fmt.Errorf("outbox table changed: %w", err))
			}
		}
	case decoder.TypeInsert:
		if !s.mapper.Matches(ev.Relation) {
			m.SkippedChanges.WithLabelValues("other_table").Inc()
			return nil
		}
		if s.eos != nil && s.eos.skip() {
			return nil // already in Kafka, says the checkpoint record
		}
		rec, err := s.mapper.Map(ev.Relation, ev.Values)
		return s.emit(rec, err, "outbox table changed")
	case decoder.TypeUpdate, decoder.TypeDelete, decoder.TypeTruncate:
		m.SkippedChanges.WithLabelValues(ev.Type.String()).Inc()
	case decoder.TypeMessage:
		return s.message(&ev.Message)
	}
	if err != nil {
		return fmt.Errorf("at %s: %w", msg.WALStart, err)
	}
	return nil
}

// message publishes a logical decoding message of the tableless outbox. Only
// transactional ones: they arrive inside their transaction, in order with its
// inserts, and only if it commits. A non-transactional message is sent at once, even
// if its transaction later aborts, so it cannot be an outbox event.
func (s *session) message(msg *decoder.LogicalMessage) error {
	m := s.r.m
	if s.messages == nil || msg.Prefix != s.r.cfg.MessagesPrefix {
		m.SkippedChanges.WithLabelValues("message").Inc()
		return nil
	}
	if !msg.Transactional || !s.inTxn {
		m.SkippedChanges.WithLabelValues("non_transactional_message").Inc()
		s.r.log.Debug().Str("prefix", msg.Prefix).Stringer("lsn", msg.LSN).Msg("skipping a non-transactional message")
		return nil
	}
	if s.eos != nil && s.eos.skip() {
		return nil
	}
	rec, err := s.messages.Map(msg.Content)
	return s.emit(rec, err, "message at "+msg.LSN.String())
}

// emit publishes a mapped event, or applies --on-error to one that cannot be
// published: a row the mapping refuses, or one Kafka refused before. Any other
// mapping error means the outbox no longer matches the configuration.
func (s *session) emit(rec *outbox.Record, err error, context string) error {
	if err != nil {
		var rowErr *outbox.RowError
		if errors.As(err, &rowErr) {
			return s.badRow(rowErr, nil)
		}
		return permanent(fmt.Errorf("%s: %w", context, err))
	}
	if row, ok := s.poisoned(rec); ok {
		return s.badRow(row, nil)
	}
	return s.publish(rec)
}

// publish produces one record of the open transaction.
func (s *session) publish(rec *outbox.Record) error {
	s.mu.Lock()
	token, err := s.tr.Add()
	s.produced = token
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.openEvents++
	s.unconfirmed++
	if s.eos != nil {
		if err := s.ensureKafkaTxn(); err != nil {
			return err
		}
	}
	msg := &s.msg
	msg.Topic = rec.Topic
	msg.Key = rec.Key
	msg.Value = rec.Value
	msg.ID = rec.ID
	msg.Token = token
	msg.Timestamp = s.commitTime
	msg.Committed = s.commitTime
	msg.Headers = msg.Headers[:0]
	for _, h := range rec.Headers {
		msg.Headers = append(msg.Headers, sink.Header{Key: h.Key, Value: h.Value})
	}
	if err := s.produce(msg, rec); err != nil {
		return err
	}
	if s.eos != nil {
		s.eos.events++
		// A backfill is one Kafka transaction (see backfill).
		if s.eos.events >= s.r.cfg.TxnMaxEvents && s.streaming {
			return s.commitKafka(s.inTxn)
		}
	}
	return nil
}

// produce hands msg to librdkafka, waiting while its queue is full.
func (s *session) produce(msg *sink.Message, rec *outbox.Record) error {
	for {
		err := s.prod.Produce(msg)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, sink.ErrQueueFull):
			// librdkafka's queue is full (Kafka slow or down, large payloads):
			// wait, but keep the walsender from timing out meanwhile.
			if err := s.confirmIfDue(); err != nil {
				return err
			}
			s.timer.Reset(5 * time.Millisecond)
			select {
			case <-s.room:
			case <-s.timer.C:
			}
			if !s.timer.Stop() {
				select {
				case <-s.timer.C:
				default:
				}
			}
			continue
		case sink.Permanent(err) && rec != nil:
			s.r.m.ProducerErrors.WithLabelValues("message").Inc()
			rowErr := &outbox.RowError{ID: string(rec.ID), Topic: rec.Topic, Reason: errors.Unwrap(err).Error(),
				Key: append([]byte(nil), rec.Key...), Payload: append([]byte(nil), rec.Value...)}
			if rec.Key == nil {
				rowErr.Key = nil
			}
			if rec.Value == nil {
				rowErr.Payload = nil
			}
			return s.badRow(rowErr, &msg.Token)
		default:
			return err
		}
	}
}

// RowFailedError stops pgoutbox under --on-error=fail: the row is not confirmed, so
// a restart meets it again.
type RowFailedError struct {
	Row *outbox.RowError
}

func (e *RowFailedError) Error() string {
	return fmt.Sprintf("cannot publish %s; stopping (--on-error=fail) with nothing confirmed past it, so a restart retries this row: fix the row, the topic or the broker, or run with --on-error=dead-letter", e.Row)
}

// badRow applies the error policy to a row that cannot be published. token is the
// row's tracker token if it was already added.
func (s *session) badRow(rowErr *outbox.RowError, token *source.LSN) error {
	m := s.r.m
	if s.r.cfg.OnError != OnErrorDeadLetter {
		m.FailedEvents.Inc()
		if token != nil {
			// The row never reached librdkafka, so no report will retire it. The loop
			// stops before its transaction's Commit, so this cannot make it safe.
			s.mu.Lock()
			_ = s.tr.Done(*token)
			s.mu.Unlock()
		}
		return permanent(&RowFailedError{Row: rowErr})
	}
	if token == nil {
		s.mu.Lock()
		t, err := s.tr.Add()
		s.produced = t
		s.mu.Unlock()
		if err != nil {
			return err
		}
		s.openEvents++
		s.unconfirmed++
		token = &t
	}
	if s.eos != nil {
		if err := s.ensureKafkaTxn(); err != nil {
			return err
		}
	}
	return s.sendDeadLetter(rowErr, *token, s.commitTime)
}

// sendDeadLetter produces the dead-letter record for a row under the row's token, so
// the row's transaction is confirmed only once the dead-letter topic has it.
func (s *session) sendDeadLetter(rowErr *outbox.RowError, token source.LSN, committed time.Time) error {
	m := s.r.m
	if err := s.prod.ProduceDeadLetter(s.deadLetter(rowErr, token, committed)); err != nil {
		if errors.Is(err, sink.ErrQueueFull) {
			return fmt.Errorf("dead-letter %s: %w; resuming from the checkpoint", rowErr, err)
		}
		m.FailedEvents.Inc()
		return permanent(fmt.Errorf("dead-letter %s: %w", rowErr, err))
	}
	s.r.log.Warn().Str("id", rowErr.ID).Str("topic", rowErr.Topic).Str("reason", rowErr.Reason).
		Str("dead_letter_topic", s.r.cfg.DeadLetterTopic).Msg("Kafka refused the event; sending it to the dead-letter topic")
	return nil
}

// onReport handles one delivery report, on the report goroutine.
func (s *session) onReport(rep *sink.Report) error {
	m := s.r.m
	if rep.AfterFatal && rep.Err != nil {
		s.suspectReport(rep)
		return nil
	}
	if rep.Control {
		// A checkpoint record's fate is its transaction's: CommitTransaction says
		// whether it made it, and an aborted one reports "purged" here.
		return nil
	}
	if rep.Err == nil {
		s.mu.Lock()
		err := s.tr.Done(rep.Token)
		idle := s.tr.InFlight() == s.failedEvents
		s.mu.Unlock()
		select {
		case s.room <- struct{}{}:
		default:
		}
		if idle {
			select {
			case s.drained <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return fmt.Errorf("ack tracker: %w", err)
		}
		if rep.DeadLetter {
			m.DeadLettered.Inc()
			s.r.log.Warn().Str("id", rep.ID).Str("dead_letter_topic", rep.Topic).Msg("event sent to the dead-letter topic")
			return nil
		}
		m.Published(rep.Topic, rep.Bytes)
		if !rep.Committed.IsZero() {
			m.CommitToAck.Observe(time.Since(rep.Committed).Seconds())
		}
		return nil
	}
	if sink.Purged(rep.Err) {
		s.mu.Lock()
		abandoned := s.abandoned
		s.mu.Unlock()
		if abandoned {
			return nil
		}
	}
	if rep.DeadLetter {
		m.FailedEvents.Inc()
		return permanent(fmt.Errorf("dead-letter topic %s refused event id=%s: %w", rep.Topic, rep.ID, rep.Err))
	}
	if !sink.Permanent(rep.Err) {
		m.ProducerErrors.WithLabelValues("transient").Inc()
		return fmt.Errorf("delivery of event id=%s to %s failed: %w; resuming from the checkpoint", rep.ID, rep.Topic, rep.Err)
	}
	if s.eos != nil {
		// The refusal dooms the open Kafka transaction, which the next session
		// aborts. Which event was refused, and what to do about it, is decided once
		// this session has ended (see refused).
		s.suspectReport(rep)
		return fmt.Errorf("kafka refused a message of the open transaction (%s); resuming from the checkpoint", rep.Err)
	}
	m.ProducerErrors.WithLabelValues("message").Inc()
	rowErr := &outbox.RowError{ID: rep.ID, Topic: rep.Topic, Reason: rep.Err.Error()}
	if s.r.cfg.OnError != OnErrorDeadLetter {
		// Stop reading, but keep taking the acks of the events before this one, so
		// they are confirmed and a restart begins at this row's transaction.
		m.FailedEvents.Inc()
		s.mu.Lock()
		if s.failed == nil {
			s.failed = &RowFailedError{Row: rowErr}
		}
		s.failedEvents++
		idle := s.tr.InFlight() == s.failedEvents
		s.mu.Unlock()
		s.stream.Interrupt()
		if idle {
			select {
			case s.drained <- struct{}{}:
			default:
			}
		}
		return nil
	}
	rowErr.Key, rowErr.Payload = rep.Key, rep.Value
	return s.sendDeadLetter(rowErr, rep.Token, rep.Committed)
}
