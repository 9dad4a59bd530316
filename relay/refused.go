package relay

import (
	"fmt"

	"github.com/pgoutbox/pgoutbox/outbox"
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

// isolation is what the relay remembers across sessions about refused events.
type isolation struct {
	// poison holds events Kafka refused on their own, by event id, to
	// dead-letter them when they are replayed.
	poison map[string]outbox.RowError
	// until, when not zero, is the newest token of a refused batch: until the
	// checkpoint passes it every event goes to Kafka alone.
	until source.LSN
}

// maxPoison bounds the remembered refused events.
const maxPoison = 1024

// refused decides what a session's refused batch means once the session ended: nil
// if there was none, otherwise the error that ends Run or restarts the pipeline.
// newest is the newest token the session produced.
func (r *relay) refused(sus []suspect, exactlyOnce bool, newest source.LSN) error {
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
	case len(sus) == 1 && (!exactlyOnce || r.iso.until != 0):
		r.m.ProducerErrors.WithLabelValues("message").Inc()
		return r.refusedEvent(sus[0].row)
	}
	until := sus[0].token
	for _, x := range sus[1:] {
		until = max(until, x.token)
	}
	what := fmt.Sprintf("a batch of %d events", len(sus))
	if exactlyOnce {
		// A refusal in a Kafka transaction is reported for the refused message
		// alone, but the session ends before every report of its request arrived:
		// any event produced so far may have been in that request.
		until = max(until, newest)
		what = "a request of the open Kafka transaction"
	}
	r.iso.until = until
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
	if len(r.iso.poison) >= maxPoison {
		clear(r.iso.poison)
	}
	r.iso.poison[row.ID] = row
	r.log.Warn().Str("id", row.ID).Str("topic", row.Topic).Str("reason", row.Reason).
		Msg("Kafka refused the event; resuming from the checkpoint to send it to the dead-letter topic")
	return fmt.Errorf("kafka refused event id=%s topic=%s: %s; resuming from the checkpoint", row.ID, row.Topic, row.Reason)
}
