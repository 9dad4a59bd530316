package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// defaultIdle is how long Consume waits for a new record when the caller
// gave neither Until nor Idle.
const defaultIdle = 2 * time.Second

// Record is a consumed Kafka record, detached from the client that read it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte // nil for a null key
	Value     []byte // nil when ValueIsNull
	// Headers maps header keys to values; when a key repeats, the last
	// value wins. Nil when the record has no headers.
	Headers   map[string][]byte
	Timestamp time.Time
	// ValueIsNull tells a tombstone (null value) from an empty value.
	ValueIsNull bool
	// ProducerID is the id of the idempotent or transactional producer that
	// wrote the record, -1 for a plain producer. A restarted publisher gets
	// a new id, which tells its duplicates apart from the old run's.
	ProducerID int64
	// ProducerEpoch is bumped each time a transactional producer with the same
	// transactional.id is initialized again.
	ProducerEpoch int16
}

// ConsumeOptions selects what Consume and Consumer read and when Consume
// stops.
type ConsumeOptions struct {
	// Topics to read; topics that do not exist yet are picked up when they
	// appear.
	Topics []string
	// TopicRegex also reads every topic matching it (Go regexp syntax,
	// unanchored).
	TopicRegex string
	// ReadCommitted hides records of open and aborted transactions.
	ReadCommitted bool
	// Until, if set, is called with every record read so far after each
	// fetch; Consume returns once it reports true.
	Until func(all []Record) bool
	// Idle makes Consume return once no new record arrived for this long.
	// When Until is nil it defaults to 2s.
	Idle time.Duration
}

// Consume reads o's topics from the beginning of every partition with a new
// client and no consumer group, so it sees everything the broker has and
// commits nothing. It returns when Until reports true, when Idle passes
// without a new record, or when ctx ends; then it returns what it read and
// ctx's error.
func Consume(ctx context.Context, brokers string, o ConsumeOptions) ([]Record, error) {
	c, err := NewConsumer(brokers, o)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	idle := o.Idle
	if idle == 0 && o.Until == nil {
		idle = defaultIdle
	}
	var all []Record
	last := time.Now()
	for {
		if o.Until != nil && o.Until(all) {
			return all, nil
		}
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if idle > 0 {
			left := idle - time.Since(last)
			if left <= 0 {
				return all, nil
			}
			pollCtx, cancel = context.WithTimeout(ctx, left)
		}
		recs, err := c.Poll(pollCtx)
		cancel()
		if len(recs) > 0 {
			all = append(all, recs...)
			last = time.Now()
		}
		if ctx.Err() != nil {
			return all, ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return all, err
		}
	}
}

// Consumer reads topics like Consume but stays open, for tests that watch a
// topic while they inject faults or measure latency.
type Consumer struct {
	cl *kgo.Client
}

// NewConsumer creates a consumer reading o's topics from the beginning; o's
// Until and Idle are not used.
func NewConsumer(brokers string, o ConsumeOptions) (*Consumer, error) {
	if len(o.Topics) == 0 && o.TopicRegex == "" {
		return nil, errors.New("kafkatest: consume: no topics")
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Find topics created after the consumer started quickly.
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	}
	if o.TopicRegex != "" {
		if _, err := regexp.Compile(o.TopicRegex); err != nil {
			return nil, fmt.Errorf("kafkatest: consume: topic regex: %w", err)
		}
		// With ConsumeRegex every topic is a pattern; anchor the
		// plain names so they match only themselves.
		patterns := []string{o.TopicRegex}
		for _, t := range o.Topics {
			patterns = append(patterns, "^"+regexp.QuoteMeta(t)+"$")
		}
		opts = append(opts, kgo.ConsumeTopics(patterns...), kgo.ConsumeRegex())
	} else {
		opts = append(opts, kgo.ConsumeTopics(o.Topics...))
	}
	if o.ReadCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new consumer: %w", err)
	}
	return &Consumer{cl: cl}, nil
}

// Poll waits for the next records and returns them. It reports errors the
// client does not retry by itself (e.g. data loss detected on a partition)
// with their topic and partition; otherwise, when ctx ends first, it returns
// what it got and ctx's error.
func (c *Consumer) Poll(ctx context.Context) ([]Record, error) {
	fetches := c.cl.PollFetches(ctx)
	var recs []Record
	fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, fromKgo(r)) })
	var errs []error
	for _, fe := range fetches.Errors() {
		if errors.Is(fe.Err, context.Canceled) || errors.Is(fe.Err, context.DeadlineExceeded) {
			continue
		}
		errs = append(errs, fmt.Errorf("kafkatest: fetch %s[%d]: %w", fe.Topic, fe.Partition, fe.Err))
	}
	if len(errs) > 0 {
		return recs, errors.Join(errs...)
	}
	return recs, ctx.Err()
}

// Close closes the consumer's client.
func (c *Consumer) Close() { c.cl.Close() }

func fromKgo(r *kgo.Record) Record {
	rec := Record{
		Topic:         r.Topic,
		Partition:     r.Partition,
		Offset:        r.Offset,
		Key:           r.Key,
		Value:         r.Value,
		Timestamp:     r.Timestamp,
		ValueIsNull:   r.Value == nil,
		ProducerID:    r.ProducerID,
		ProducerEpoch: r.ProducerEpoch,
	}
	if len(r.Headers) > 0 {
		rec.Headers = make(map[string][]byte, len(r.Headers))
		for _, h := range r.Headers {
			rec.Headers[h.Key] = h.Value
		}
	}
	return rec
}
