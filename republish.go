package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/decoder"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// republisher publishes the pages of one republish.
type republisher struct {
	o      *republishOptions
	log    zerolog.Logger
	bar    *progressBar
	conn   *source.Conn
	mapper *outbox.Mapper
	state  republishState
	total  int64

	started, lastLog time.Time
	rowsAtStart      int64

	// The producer, its report goroutine (Run) and what that goroutine counts.
	prod      *sink.Producer
	isolating bool // one event per request, to find a refused event
	restarts  int  // producers rebuilt in a row after fatal errors
	stopRun   func()
	runDone   chan struct{}
	msg       sink.Message
	ackc      chan struct{}

	mu      sync.Mutex
	acked   int
	refusal *refusal
	runErr  error
}

// refusal is an event Kafka refused.
type refusal struct {
	id, topic  string
	err        error
	afterFatal bool // reported after a fatal error: maybe not the refused one of its batch
}

// errProducerFailed stops reading a page when the producer failed fatally: the
// wait for its acks then decides what to do.
var errProducerFailed = errors.New("kafka producer failed")

// errRedoPage asks run to publish the current page again with the new producer.
var errRedoPage = errors.New("publish the page again")

// fatalSettle is how long a failed Produce waits for Run to report a fatal error
// (Run collects the delivery reports that follow one for 200 ms of quiet).
const fatalSettle = 3 * time.Second

// maxRestarts bounds producers rebuilt in a row after fatal errors with no refused
// event to show for them.
const maxRestarts = 3

// openProducer (re)creates the producer and starts draining its reports.
func (r *republisher) openProducer(isolate bool) error {
	r.closeProducer()
	cfg := r.o.kafka
	cfg.Isolate = isolate
	p, err := sink.New(cfg, nil, r.log)
	if err != nil {
		return err
	}
	r.prod, r.isolating = p, isolate
	r.ackc = make(chan struct{}, 1)
	r.mu.Lock()
	r.acked, r.refusal, r.runErr = 0, nil, nil
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.runDone = done
	r.stopRun = func() {
		cancel()
		<-done
	}
	go func() {
		defer close(done)
		err := p.Run(ctx, r.onReport)
		r.mu.Lock()
		r.runErr = err
		r.mu.Unlock()
	}()
	return nil
}

func (r *republisher) closeProducer() {
	if r.prod == nil {
		return
	}
	r.stopRun()
	r.prod.Close()
	r.prod = nil
}

// onReport runs on Run's goroutine for every delivery report.
func (r *republisher) onReport(rep *sink.Report) error {
	r.mu.Lock()
	if rep.Err == nil {
		r.acked++
	} else if r.refusal == nil || (r.refusal.afterFatal && !sink.Permanent(r.refusal.err) && sink.Permanent(rep.Err)) {
		r.refusal = &refusal{id: rep.ID, topic: rep.Topic, err: rep.Err, afterFatal: rep.AfterFatal}
	}
	r.mu.Unlock()
	select {
	case r.ackc <- struct{}{}:
	default:
	}
	return nil
}

// page publishes the page after the saved position and waits for its acks.
func (r *republisher) page(ctx, qctx context.Context) (source.Position, int, error) {
	r.mu.Lock()
	r.acked = 0
	r.mu.Unlock()
	produced := 0
	next, n, err := r.conn.ReadPage(qctx, r.o.spec, r.state.After, func(rel *decoder.Relation, values []decoder.Value) error {
		if ctx.Err() != nil {
			return errStopped
		}
		rec, err := r.mapper.Map(rel, values)
		if err != nil {
			var rowErr *outbox.RowError
			if errors.As(err, &rowErr) {
				return r.refused(fmt.Errorf("the mapping refuses %w", rowErr))
			}
			return fmt.Errorf("the outbox table does not match the mapping: %w", err)
		}
		if err := r.produce(ctx, rec); err != nil {
			return err
		}
		produced++
		return nil
	})
	if err != nil && !errors.Is(err, errStopped) && !errors.Is(err, errProducerFailed) {
		return r.state.After, 0, err
	}
	stopping := errors.Is(err, errStopped)
	if werr := r.waitAcks(ctx, produced); werr != nil {
		return r.state.After, 0, werr
	}
	if stopping {
		return r.state.After, 0, errStopped // a partial page: redone by --resume
	}
	if errors.Is(err, errProducerFailed) {
		return r.state.After, 0, errRedoPage
	}
	r.restarts = 0
	return next, n, nil
}

// refused names a refused row and where a --resume would continue.
func (r *republisher) refused(err error) error {
	return fmt.Errorf("%w; the %d rows before its page are republished, --resume continues from there once the cause is fixed", err, r.state.Rows)
}

// produce hands rec to librdkafka, waiting while its queue is full.
func (r *republisher) produce(ctx context.Context, rec *outbox.Record) error {
	m := &r.msg
	m.Topic, m.Key, m.Value, m.ID = rec.Topic, rec.Key, rec.Value, rec.ID
	m.Partition, m.Partitioned = rec.Partition, rec.Partition >= 0 // as the stream does
	m.Timestamp = rec.Timestamp
	m.Headers = m.Headers[:0]
	for _, h := range rec.Headers {
		m.Headers = append(m.Headers, sink.Header{Key: h.Key, Value: h.Value})
	}
	for {
		err := r.prod.Produce(m)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, sink.ErrQueueFull):
			select {
			case <-r.ackc:
			case <-r.runDone:
				return errProducerFailed
			case <-ctx.Done():
				return errStopped
			case <-time.After(10 * time.Millisecond):
			}
		case sink.Permanent(err):
			return r.refused(fmt.Errorf("kafka refused %w", err))
		default:
			// After a fatal error librdkafka refuses new messages ("Local: Fatal
			// error") before Run has returned with it: let the wait for acks decide.
			select {
			case <-r.runDone:
				return errProducerFailed
			case <-time.After(fatalSettle):
				return err
			}
		}
	}
}

// waitAcks waits until Kafka acknowledged produced events, or refused one. After a
// signal it waits at most reportsDone.
func (r *republisher) waitAcks(ctx context.Context, produced int) error {
	var deadline <-chan time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r.mu.Lock()
		acked, ref, runErr := r.acked, r.refusal, r.runErr
		r.mu.Unlock()
		select {
		case <-r.runDone:
			r.mu.Lock()
			ref, runErr = r.refusal, r.runErr
			r.mu.Unlock()
			return r.afterFatal(ref, runErr)
		default:
		}
		if ref != nil && !ref.afterFatal {
			return r.refused(fmt.Errorf("kafka refused event id=%s topic=%s: %w", ref.id, ref.topic, ref.err))
		}
		if acked >= produced {
			return nil
		}
		if deadline == nil && ctx.Err() != nil {
			deadline = time.After(reportsDone)
		}
		select {
		case <-r.ackc:
		case <-r.runDone:
		case <-tick.C:
			r.progress(false)
		case <-deadline:
			return fmt.Errorf("%d events of the last page still unacknowledged %s after the signal; that page is published again by --resume", produced-acked, reportsDone)
		case <-ctxDone(ctx, deadline):
		}
	}
}

// ctxDone is ctx.Done() until the stop deadline is armed, then nil: a cancelled
// context must not spin the wait loop.
func ctxDone(ctx context.Context, deadline <-chan time.Time) <-chan struct{} {
	if deadline != nil {
		return nil
	}
	return ctx.Done()
}

// afterFatal decides what a fatal producer error means. With enable.gapless.guarantee
// a batch the broker refuses is fatal, and the reports that follow name the batch's
// events, not which of them was refused: the page is published again one event per
// request, and then the refused event is the one reported. A fatal error without a
// refused event rebuilds the producer a few times.
func (r *republisher) afterFatal(ref *refusal, runErr error) error {
	if runErr == nil {
		runErr = errors.New("kafka producer stopped")
	}
	if ref != nil && sink.Permanent(ref.err) {
		if r.isolating {
			return r.refused(fmt.Errorf("kafka refused event id=%s topic=%s: %w", ref.id, ref.topic, ref.err))
		}
		r.log.Warn().Str("topic", ref.topic).Err(ref.err).
			Msg("Kafka refused a batch; publishing the page again one event per request to find the refused event")
		if err := r.openProducer(true); err != nil {
			return err
		}
		return errRedoPage
	}
	r.restarts++
	if r.restarts > maxRestarts {
		return fmt.Errorf("republish: %w", runErr)
	}
	r.log.Warn().Err(runErr).Int("attempt", r.restarts).Msg("kafka producer failed; publishing the page again with a new producer")
	if err := r.openProducer(r.isolating); err != nil {
		return err
	}
	return errRedoPage
}
