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
	case len(sus) == 1:
		row := sus[0].row
		r.m.ProducerErrors.WithLabelValues("message").Inc()
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
	until := sus[0].token
	for _, x := range sus[1:] {
		until = max(until, x.token)
	}
	r.isolating, r.isolateUntil = true, until
	r.log.Warn().Int("events", len(sus)).Str("topic", sus[0].row.Topic).Str("reason", sus[0].row.Reason).
		Msg("Kafka refused a batch of events; publishing one event per request from the checkpoint to find the refused one")
	return fmt.Errorf("kafka refused a batch of %d events (%s); isolating them", len(sus), sus[0].row.Reason)
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
