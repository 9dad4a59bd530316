package relay

import (
	"context"
	"time"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// The relay's view of the world it drives: small interfaces, so that the loop, the
// committers and the shutdown can be tested with hand-written fakes and a fake clock.

// stream is the replication connection as the loop uses it (*source.Stream).
type stream interface {
	// Receive waits until deadline for the next message (source.ErrTimeout).
	Receive(deadline time.Time) (*source.Message, error)
	// SendStatus confirms lsn; replyRequested asks the server for a keepalive back.
	SendStatus(lsn source.LSN, replyRequested bool) error
}

// producer is the Kafka producer as the loop uses it (*sink.Producer).
type producer interface {
	// Produce enqueues m; sink.ErrQueueFull means wait and retry. When it returns
	// an error no report comes for m.
	Produce(m *sink.Message) error
}

// txnProducer is what the exactly-once committer needs of a transactional producer.
type txnProducer interface {
	BeginTransaction() error
	// Flush waits up to timeout for queued messages and returns how many are left.
	Flush(timeout time.Duration) int
	CommitTransaction(ctx context.Context) error
	AbortTransaction(ctx context.Context) error
	ProduceCheckpoint(topic, key string, cp checkpoint.Checkpoint) error
}

// clock is time as the loop sees it.
type clock interface {
	Now() time.Time
	// Timer fires once after d; stop releases it. Every wait stops its timer.
	Timer(d time.Duration) (fire <-chan time.Time, stop func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Timer(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// sleep waits d on c, or until one of the channels is ready.
func sleep(c clock, d time.Duration, wake ...<-chan struct{}) {
	fire, stop := c.Timer(d)
	defer stop()
	switch len(wake) {
	case 0:
		<-fire
	case 1:
		select {
		case <-fire:
		case <-wake[0]:
		}
	default:
		select {
		case <-fire:
		case <-wake[0]:
		case <-wake[1]:
		}
	}
}

// waitFor runs fn on a goroutine of its own and waits for it, calling keepAlive every
// interval meanwhile: a Kafka commit or the exactly-once set-up may take minutes when
// Kafka is down, and the walsender must keep hearing from pgoutbox. A keepAlive error
// is returned once fn has returned too; fn's goroutine never outlives waitFor.
func waitFor(ctx context.Context, c clock, interval time.Duration, keepAlive func() error, fn func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	for {
		fire, stop := c.Timer(interval)
		select {
		case err := <-done:
			stop()
			return err
		case <-fire:
			if err := keepAlive(); err != nil {
				cancel()
				<-done
				return err
			}
		}
	}
}
