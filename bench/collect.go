package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// collector is the independent consumer: it reads every outbox topic from the
// beginning with franz-go (never pgoutbox's code), counts each event id and
// notes when every expected id has arrived.
type collector struct {
	cons *kafkatest.Consumer
	// onRecord, if set, sees every record with its arrival time; it runs
	// on the consuming goroutine.
	onRecord func(r kafkatest.Record, arrived time.Time)

	mu         sync.Mutex
	count      map[string]int // arrivals per id
	records    int
	noID       int
	first      time.Time
	expect     map[string]bool
	missing    int
	complete   chan struct{} // closed when every expected id arrived
	completeAt time.Time

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	err       error // a consumer error other than the end of ctx
}

// startCollector starts consuming brokers' outbox topics in the background.
// readCommitted hides open and aborted Kafka transactions, as exactly-once consumers
// must.
func startCollector(brokers string, readCommitted bool, onRecord func(kafkatest.Record, time.Time)) (*collector, error) {
	cons, err := kafkatest.NewConsumer(brokers, kafkatest.ConsumeOptions{TopicRegex: `^outbox\.event\.`, ReadCommitted: readCommitted})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{
		cons: cons, onRecord: onRecord,
		count:    make(map[string]int),
		complete: make(chan struct{}),
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go c.run(ctx)
	return c, nil
}

func (c *collector) run(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		recs, err := c.cons.Poll(ctx)
		at := time.Now()
		c.add(recs, at)
		if err != nil && ctx.Err() == nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
	}
}

func (c *collector) add(recs []kafkatest.Record, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		if c.records == 0 {
			c.first = at
		}
		c.records++
		id, ok := r.Headers["id"]
		if !ok {
			c.noID++
			continue
		}
		s := string(id)
		c.count[s]++
		if c.count[s] == 1 && c.expect[s] {
			c.missing--
			c.checkComplete(at)
		}
		if c.onRecord != nil {
			c.onRecord(r, at)
		}
	}
}

// expectIDs sets the ids that must arrive; ids that already did count.
func (c *collector) expectIDs(ids map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expect = ids
	c.missing = 0
	for id := range ids {
		if c.count[id] == 0 {
			c.missing++
		}
	}
	c.checkComplete(time.Now())
}

func (c *collector) checkComplete(at time.Time) {
	if c.missing == 0 && c.expect != nil && c.completeAt.IsZero() {
		c.completeAt = at
		close(c.complete)
	}
}

// wait returns when every expected id arrived, the consumer failed, the
// publisher p exited, ctx ended or timeout passed.
func (c *collector) wait(ctx context.Context, p *proc, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	var exited <-chan struct{}
	if p != nil {
		exited = p.exited
	}
	select {
	case <-c.complete:
		return nil
	case <-c.done:
		return fmt.Errorf("consumer stopped: %v", c.err)
	case <-exited:
		return fmt.Errorf("%s exited before every event arrived (%s): %v; output tail:\n%s", p.name, c.progress(), p.err, p.out.tail(20))
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("not every event arrived within %v (%s)", timeout, c.progress())
	}
}

func (c *collector) progress() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d records, %d of %d expected ids missing", c.records, c.missing, len(c.expect))
}

// tally is what the consumer saw, to check correctness in passing.
type tally struct {
	records    int // records read
	distinct   int // distinct ids among them
	expected   int
	missing    int // expected ids that never arrived
	unexpected int // ids not in the expected set
	duplicates int // records beyond the first per id
	noID       int // records without an id header
}

func (c *collector) tally() tally {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := tally{records: c.records, distinct: len(c.count), expected: len(c.expect), missing: c.missing, noID: c.noID}
	for id, n := range c.count {
		t.duplicates += n - 1
		if !c.expect[id] {
			t.unexpected++
		}
	}
	return t
}

func (t tally) ok() bool {
	return t.missing == 0 && t.unexpected == 0 && t.duplicates == 0 && t.noID == 0
}

func (t tally) String() string {
	return fmt.Sprintf("%d records, %d distinct ids of %d expected, %d missing, %d duplicates, %d unexpected, %d without id",
		t.records, t.distinct, t.expected, t.missing, t.duplicates, t.unexpected, t.noID)
}

// waitRecords waits until at least n records arrived.
func (c *collector) waitRecords(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		got, err := c.records, c.err
		c.mu.Unlock()
		switch {
		case got >= n:
			return nil
		case err != nil:
			return fmt.Errorf("consumer stopped: %w", err)
		case time.Now().After(deadline):
			return fmt.Errorf("%d of %d records arrived within %v", got, n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// close stops consuming; later calls do nothing.
func (c *collector) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.done
		c.cons.Close()
	})
}
