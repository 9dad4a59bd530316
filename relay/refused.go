package relay

import (
	"errors"
	"fmt"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// A batch the broker refuses permanently (a topic's max.message.bytes, a record it
// cannot validate) is fatal for the producer: with enable.gapless.guarantee the
// partition's later messages must not be written before it. The delivery reports
// that follow the fatal error name the batch's events, but not which of them the
// broker objected to. pgoutbox then replays from the checkpoint sending one event
// per request ("isolating") until the refused one is alone in its batch, and applies
// --on-error to exactly that event: fail names it, dead-letter remembers it and
// dead-letters it when it is replayed once more.
//
// In exactly-once mode a refusal is not fatal but dooms the open Kafka transaction;
// it is reported for the refused message, yet the broker refuses whole requests, so
// the same isolation finds the event, and the replays abort nothing that a
// read_committed consumer could have seen.

// suspect is an event of a refused batch.
type suspect struct {
	row        outbox.RowError
	token      source.LSN
	deadLetter bool // the refused record was a dead-letter record
}

// errLeaveIsolation ends a session that isolated events once it is past the
// refused batch, so the next session batches again.
var errLeaveIsolation = errors.New("leaving one-event-per-request mode")

// suspectReport records an event of a refused batch, reported after the fatal error.
func (s *session) suspectReport(rep *sink.Report) {
	if rep.Err == nil || rep.Control || !sink.Permanent(rep.Err) {
		return
	}
	s.mu.Lock()
	s.suspects = append(s.suspects, suspect{
		row:        outbox.RowError{ID: rep.ID, Topic: rep.Topic, Reason: rep.Err.Error(), Key: rep.Key, Payload: rep.Value},
		token:      rep.Token,
		deadLetter: rep.DeadLetter,
	})
	s.mu.Unlock()
}

// refused decides what a refused batch means once the session ended: nil if there
// was none, otherwise the error that ends Run or restarts the pipeline.
func (s *session) refused() error {
	s.mu.Lock()
	sus := s.suspects
	s.mu.Unlock()
	r := s.r
	for _, x := range sus {
		if x.deadLetter {
			// If the dead-letter topic refuses it too, behave as fail.
			r.m.FailedEvents.Inc()
			return permanent(fmt.Errorf("dead-letter topic %s refused event id=%s: %s", x.row.Topic, x.row.ID, x.row.Reason))
		}
	}
	switch {
	case len(sus) == 0:
		return nil
	case len(sus) == 1 && (s.eos == nil || r.isolating):
		r.m.ProducerErrors.WithLabelValues("message").Inc()
		return r.refusedEvent(sus[0].row)
	}
	until := sus[0].token
	for _, x := range sus[1:] {
		until = max(until, x.token)
	}
	what := fmt.Sprintf("a batch of %d events", len(sus))
	if s.eos != nil {
		// A refusal in a Kafka transaction is reported for the refused message
		// alone, but the session ends before every report of its request arrived:
		// any event produced so far may have been in that request.
		s.mu.Lock()
		until = s.produced
		s.mu.Unlock()
		what = "a request of the open Kafka transaction"
	}
	r.isolating, r.isolateUntil = true, until
	r.log.Warn().Str("topic", sus[0].row.Topic).Str("reason", sus[0].row.Reason).
		Msgf("Kafka refused %s; publishing one event per request from the checkpoint to find the refused event", what)
	return fmt.Errorf("kafka refused %s (%s); isolating the refused event", what, sus[0].row.Reason)
}

// refusedEvent applies --on-error to an event Kafka refused on its own: fail names
// it; dead-letter remembers it and restarts from the checkpoint, and the replay
// dead-letters it.
func (r *relay) refusedEvent(row outbox.RowError) error {
	if r.cfg.OnError != OnErrorDeadLetter {
		r.m.FailedEvents.Inc()
		return permanent(&RowFailedError{Row: &row})
	}
	if len(r.poison) >= maxPoison {
		clear(r.poison)
	}
	r.poison[row.ID] = row
	r.log.Warn().Str("id", row.ID).Str("topic", row.Topic).Str("reason", row.Reason).
		Msg("Kafka refused the event; resuming from the checkpoint to send it to the dead-letter topic")
	return fmt.Errorf("kafka refused event id=%s topic=%s: %s; resuming from the checkpoint", row.ID, row.Topic, row.Reason)
}

// maxPoison bounds the remembered refused events.
const maxPoison = 1024

// poisoned returns the remembered refusal of the event rec, if any.
func (s *session) poisoned(rec *outbox.Record) (*outbox.RowError, bool) {
	if len(s.r.poison) == 0 {
		return nil, false
	}
	row, ok := s.r.poison[string(rec.ID)]
	if !ok {
		return nil, false
	}
	row.Topic = rec.Topic
	row.Key = append([]byte(nil), rec.Key...)
	row.Payload = append([]byte(nil), rec.Value...)
	if rec.Key == nil {
		row.Key = nil
	}
	if rec.Value == nil {
		row.Payload = nil
	}
	return &row, true
}
