package relay

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/ledger"
	"github.com/pgoutbox/pgoutbox/metrics"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
)

// reports classifies delivery reports, on the report goroutine, and records them in
// the ledger. It never produces and never touches the stream: what a refusal means
// is decided by the loop (a dead letter, or a stop) or, for a refused batch, by the
// relay once the session has ended (see refused.go). A report that ends the session
// is returned as an error, which stops the report goroutine and, through the
// session's context, the loop.
type reports struct {
	led *ledger.Ledger
	m   *metrics.Metrics
	log zerolog.Logger
	// exactlyOnce: a refusal dooms the open Kafka transaction.
	exactlyOnce bool
	// abandoned is set before the session aborts a Kafka transaction on purpose:
	// the reports of its purged messages are then no failure.
	abandoned atomic.Bool
	// last is when the last report came (unix nanoseconds).
	last atomic.Int64

	mu       sync.Mutex
	suspects []suspect
}

// refusal is the reason the ledger keeps for an event Kafka refused.
type refusal struct {
	row       *outbox.RowError
	committed time.Time
}

func (r *refusal) Error() string { return r.row.Error() }

// suspect is an event of a refused batch.
type suspect struct {
	row        outbox.RowError
	token      ledger.LSN
	deadLetter bool // the refused record was a dead-letter record
}

// handle is the sink's report handler.
func (r *reports) handle(rep *sink.Report) error {
	r.last.Store(time.Now().UnixNano())
	if rep.AfterFatal {
		r.suspect(rep)
		return nil
	}
	if rep.Control {
		// A checkpoint record's fate is its transaction's: CommitTransaction says
		// whether it made it, and an aborted one reports "purged" here.
		return nil
	}
	if rep.Err == nil {
		if err := r.led.Done(rep.Token); err != nil {
			return fmt.Errorf("delivery report: %w", err)
		}
		if rep.DeadLetter {
			r.m.DeadLettered.Inc()
			r.log.Warn().Str("id", rep.ID).Str("dead_letter_topic", rep.Topic).Msg("event sent to the dead-letter topic")
			return nil
		}
		r.m.Published(rep.Topic, rep.Bytes)
		if !rep.Committed.IsZero() {
			r.m.CommitToAck.Observe(time.Since(rep.Committed).Seconds())
		}
		return nil
	}
	if sink.Purged(rep.Err) {
		// librdkafka dropped it before delivery: a transaction was aborted or the
		// producer is closing. Never a refusal, dead letter or not.
		if r.abandoned.Load() {
			return nil
		}
		return fmt.Errorf("kafka dropped event id=%s before delivery (%w); resuming from the checkpoint", rep.ID, rep.Err)
	}
	if rep.DeadLetter {
		r.m.FailedEvents.Inc()
		return permanent(fmt.Errorf("dead-letter topic %s refused event id=%s: %w", rep.Topic, rep.ID, rep.Err))
	}
	if !sink.Permanent(rep.Err) {
		r.m.ProducerErrors.WithLabelValues("transient").Inc()
		return fmt.Errorf("delivery of event id=%s to %s failed: %w; resuming from the checkpoint", rep.ID, rep.Topic, rep.Err)
	}
	if r.exactlyOnce {
		// The refusal dooms the open Kafka transaction, which the next session
		// aborts. Which event was refused, and what to do about it, is decided once
		// this session has ended (see refused).
		r.suspect(rep)
		return fmt.Errorf("kafka refused a message of the open transaction (%s); resuming from the checkpoint", rep.Err)
	}
	r.m.ProducerErrors.WithLabelValues("message").Inc()
	row := &outbox.RowError{ID: rep.ID, Topic: rep.Topic, Reason: rep.Err.Error(), Key: rep.Key, Payload: rep.Value}
	if err := r.led.Refuse(rep.Token, &refusal{row: row, committed: rep.Committed}); err != nil {
		return fmt.Errorf("delivery report: %w", err)
	}
	return nil
}

// lastReport returns when the last report came; zero before the first.
func (r *reports) lastReport() time.Time {
	if ns := r.last.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// suspect records an event of a refused batch.
func (r *reports) suspect(rep *sink.Report) {
	if rep.Err == nil || rep.Control || !sink.Permanent(rep.Err) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.suspects = append(r.suspects, suspect{
		row:        outbox.RowError{ID: rep.ID, Topic: rep.Topic, Reason: rep.Err.Error(), Key: rep.Key, Payload: rep.Value},
		token:      rep.Token,
		deadLetter: rep.DeadLetter,
	})
}

// refusedBatch returns the suspects recorded so far.
func (r *reports) refusedBatch() []suspect {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]suspect(nil), r.suspects...)
}
