// Package sink owns everything Kafka: the librdkafka producer, its delivery reports,
// the exactly-once transactions and the checkpoint topic.
//
// Each message carries a token (the LSN of its PostgreSQL transaction) that comes back
// on its delivery report, so the caller can tell which transaction an ack completes.
// Delivery reports are drained by one goroutine, Run.
package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"
)

// Message is one record to produce. Produce copies everything it needs, so the
// caller may reuse the Message and its byte slices as soon as Produce returns.
type Message struct {
	Topic string
	// Partition is the partition to write to when Partitioned; otherwise the
	// partitioner hashes the key (murmur2, like Java).
	Partition   int32
	Partitioned bool
	Key         []byte // nil is a null key
	Value       []byte // nil is a null value
	Headers     []Header
	Timestamp   time.Time
	ID          []byte // event id, reported with a failed delivery
	Token       pglogrepl.LSN
	// Committed is the commit time of the message's transaction; the delivery
	// report carries it back to measure commit-to-ack latency.
	Committed time.Time
	// DeadLetter marks a dead-letter record; its report says so.
	DeadLetter bool
}

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Report is the outcome of one Produce.
type Report struct {
	Token     pglogrepl.LSN
	Committed time.Time
	Topic     string
	Partition int32
	Offset    int64
	Bytes     int // key + value size, for metrics
	// DeadLetter marks the report of a message with Message.DeadLetter set, Control
	// one of ProduceCheckpoint.
	DeadLetter bool
	Control    bool
	// AfterFatal marks a report that arrived after the producer failed fatally.
	AfterFatal bool
	// Err is nil when the broker acknowledged the message. Otherwise the fields below
	// describe the message (Key, Value and Headers only with Config.ReportFields).
	Err     error
	ID      string
	Key     []byte
	Value   []byte
	Headers []Header
}

// inflight is what rides with a message through librdkafka as its opaque.
// Pooled: one is needed per message in flight.
type inflight struct {
	kind      kind
	token     pglogrepl.LSN
	committed time.Time
	id        []byte
	bytes     int
}

// kind tells pgoutbox's own records from events.
type kind uint8

const (
	kindEvent kind = iota
	kindDeadLetter
	kindControl
)

var inflightPool = sync.Pool{New: func() any { return new(inflight) }}

// Producer is an idempotent librdkafka producer.
//
// Produce, ProduceCheckpoint and the transaction calls are made by one goroutine (the
// replication loop) and Run by another; they share only librdkafka, which is safe
// for that.
type Producer struct {
	p   *kafka.Producer
	log zerolog.Logger
	msg kafka.Message // reused by Produce
	hdr []kafka.Header

	brokersDown bool // owned by Run
	authFailed  bool // owned by Run

	// StateChanged, if set before Run, is called on Run's goroutine when the
	// brokers become unreachable (up false, with the reason) or reachable again.
	StateChanged func(up bool, reason string)
}

// New creates a producer. It does not wait for the brokers: librdkafka connects in the
// background and Run reports when it cannot.
func New(cfg Config, extra map[string]string, log zerolog.Logger) (*Producer, error) {
	if cfg.Brokers == "" {
		return nil, errors.New("no kafka brokers given")
	}
	cm := kafka.ConfigMap{}
	for k, v := range cfg.properties() {
		cm[k] = v
	}
	for k, v := range extra {
		cm[k] = v
	}
	fields := "none"
	if cfg.ReportFields {
		fields = "key,value,headers"
	}
	cm["go.delivery.report.fields"] = fields
	// The Go client preallocates these channels; its defaults (a million entries)
	// would cost tens of megabytes before the first event.
	cm["go.events.channel.size"] = 20000
	cm["go.produce.channel.size"] = 1
	cm["go.logs.channel.enable"] = true
	p, err := kafka.NewProducer(&cm)
	if err != nil {
		return nil, fmt.Errorf("create kafka producer: %w", err)
	}
	primeProducerID(p)
	return &Producer{p: p, log: log}, nil
}

// primeProducerID works around a startup race in librdkafka's idempotent producer,
// which otherwise delays the first event by half a second in about one start of
// eight (make bench). The producer asks for its id when a metadata response
// arrives; if that happens while the bootstrap connection is being replaced by the
// broker's own and the broker's first metadata request is suppressed as a
// duplicate, it waits for its 500 ms retry timer. Two metadata requests before
// anything is produced make sure a response arrives once a broker connection is
// up. Errors are ignored: an unreachable broker is reported by Run.
func primeProducerID(p *kafka.Producer) {
	for i := 0; i < 2; i++ {
		_, _ = p.GetMetadata(nil, false, 200)
	}
}

// ErrQueueFull is returned by Produce when librdkafka's queue is full; wait for
// delivery reports and retry.
var ErrQueueFull = errors.New("kafka producer queue is full")

// Produce enqueues m. The outcome arrives on Run's handler, except when Produce
// returns an error: then no report will come for m. ErrQueueFull means librdkafka's
// queue is full: wait for reports and try again.
func (p *Producer) Produce(m *Message) error {
	kd := kindEvent
	if m.DeadLetter {
		kd = kindDeadLetter
	}
	return p.produce(m, kd)
}

func (p *Producer) produce(m *Message, kd kind) error {
	k, hdr := &p.msg, &p.hdr
	topic := m.Topic
	k.TopicPartition = kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}
	if m.Partitioned {
		k.TopicPartition.Partition = m.Partition
	}
	k.Key = m.Key
	k.Value = m.Value
	k.Timestamp = m.Timestamp
	*hdr = (*hdr)[:0]
	for _, h := range m.Headers {
		*hdr = append(*hdr, kafka.Header{Key: h.Key, Value: h.Value})
	}
	k.Headers = *hdr
	in := inflightPool.Get().(*inflight)
	in.kind = kd
	in.token = m.Token
	in.committed = m.Committed
	in.id = append(in.id[:0], m.ID...)
	in.bytes = len(m.Key) + len(m.Value)
	k.Opaque = in
	err := p.p.Produce(k, nil)
	k.Opaque, k.Key, k.Value, k.Headers = nil, nil, nil, nil
	if err != nil {
		inflightPool.Put(in)
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.Code() == kafka.ErrQueueFull {
			return ErrQueueFull
		}
		return &DeliveryError{ID: string(m.ID), Topic: m.Topic, Err: err}
	}
	return nil
}

// DeliveryError is a message Kafka refused.
type DeliveryError struct {
	ID    string
	Topic string
	Err   error
}

func (e *DeliveryError) Error() string {
	return fmt.Sprintf("event id=%s topic=%s: %v", e.ID, e.Topic, e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// Permanent reports whether err is about the message itself (too large, bad topic,
// missing topic, not authorized): producing it again gives the same answer, so an
// error policy (stop or dead-letter) applies. Anything else — a message that
// timed out or was purged, a fatal producer error — is about the pipeline, which is
// rebuilt from the checkpoint instead.
func Permanent(err error) bool {
	var kerr kafka.Error
	if !errors.As(err, &kerr) {
		return false
	}
	if kerr.IsFatal() {
		return false
	}
	switch kerr.Code() {
	case kafka.ErrMsgSizeTooLarge, kafka.ErrInvalidMsgSize, kafka.ErrTopicException,
		kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic, kafka.ErrTopicAuthorizationFailed,
		kafka.ErrInvalidRecord, kafka.ErrRecordListTooLarge, kafka.ErrInvalidMsg,
		kafka.ErrPolicyViolation, kafka.ErrInvalidArg, kafka.ErrUnknownPartition:
		return true
	}
	return false
}

// Unauthorized reports whether Kafka refused err's request for lack of an ACL: no
// retry helps until an administrator grants it.
func Unauthorized(err error) bool {
	var kerr kafka.Error
	if !errors.As(err, &kerr) {
		return false
	}
	switch kerr.Code() {
	case kafka.ErrTransactionalIDAuthorizationFailed, kafka.ErrClusterAuthorizationFailed,
		kafka.ErrTopicAuthorizationFailed, kafka.ErrGroupAuthorizationFailed:
		return true
	}
	return false
}

// Purged reports whether err is the report of a message librdkafka dropped before
// delivery because its transaction was aborted or the producer purged its queues.
func Purged(err error) bool {
	var kerr kafka.Error
	return errors.As(err, &kerr) && (kerr.Code() == kafka.ErrPurgeQueue || kerr.Code() == kafka.ErrPurgeInflight)
}

// Fatal reports whether err means the producer can no longer be used.
func Fatal(err error) bool {
	var kerr kafka.Error
	return errors.As(err, &kerr) && kerr.IsFatal()
}

// Run drains delivery reports and client events until ctx ends or the producer hits
// a fatal error, calling handle for every report. handle runs on Run's goroutine.
// Run returns nil when ctx ends, the fatal error otherwise.
func (p *Producer) Run(ctx context.Context, handle func(*Report) error) error {
	var r Report
	logs := p.p.Logs()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-logs:
			if ok {
				p.logLibrdkafka(l)
			}
		case ev, ok := <-p.p.Events():
			if !ok {
				return errors.New("kafka producer closed")
			}
			switch e := ev.(type) {
			case *kafka.Message:
				p.report(e, &r)
				if err := handle(&r); err != nil {
					return err
				}
			case kafka.Error:
				if e.IsFatal() {
					p.afterFatal(handle, &r)
					return fmt.Errorf("kafka producer: %w", e)
				}
				p.clientError(e)
			}
		}
	}
}

// afterFatal hands over the delivery reports librdkafka emits right after a fatal
// error: those of the batch that caused it carry the broker's error, which tells a
// refused batch (permanent) from a lost producer state. They have AfterFatal set,
// and handle's errors are ignored: the producer is finished either way.
func (p *Producer) afterFatal(handle func(*Report) error, r *Report) {
	quiet := time.NewTimer(200 * time.Millisecond)
	defer quiet.Stop()
	for {
		select {
		case ev, ok := <-p.p.Events():
			if !ok {
				return
			}
			if m, isMsg := ev.(*kafka.Message); isMsg {
				p.report(m, r)
				r.AfterFatal = true
				_ = handle(r)
			}
			quiet.Reset(200 * time.Millisecond)
		case <-quiet.C:
			return
		}
	}
}

func (p *Producer) report(m *kafka.Message, r *Report) {
	*r = Report{}
	in, _ := m.Opaque.(*inflight)
	if in != nil {
		r.Token = in.token
		r.DeadLetter = in.kind == kindDeadLetter
		r.Control = in.kind == kindControl
		r.Committed = in.committed
		r.Bytes = in.bytes
	}
	if m.TopicPartition.Topic != nil {
		r.Topic = *m.TopicPartition.Topic
	}
	r.Partition = m.TopicPartition.Partition
	r.Offset = int64(m.TopicPartition.Offset)
	if in != nil && (r.DeadLetter || m.TopicPartition.Error != nil) {
		r.ID = string(in.id) // dead letters are logged by id when acknowledged
	}
	if err := m.TopicPartition.Error; err != nil {
		r.Err = err
		r.Key, r.Value = m.Key, m.Value
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, Header{Key: h.Key, Value: h.Value})
		}
	} else if p.brokersDown || p.authFailed {
		p.brokersDown, p.authFailed = false, false
		p.log.Info().Msg("kafka brokers reachable again")
		p.changed(true, "")
	}
	if in != nil {
		inflightPool.Put(in)
	}
}

// clientError logs a non-fatal client-level error once per kind until the next
// successful delivery: librdkafka recovers from these by itself (reconnects,
// retries) and keeps the messages queued, so they are states, not events.
func (p *Producer) clientError(e kafka.Error) {
	switch e.Code() {
	case kafka.ErrAllBrokersDown:
		if !p.brokersDown {
			p.brokersDown = true
			p.log.Warn().Str("error", e.Error()).Msg("kafka brokers down; holding events and retrying")
			p.changed(false, "kafka brokers down")
		}
	case kafka.ErrAuthentication, kafka.ErrSaslAuthenticationFailed, kafka.ErrSsl:
		if !p.authFailed {
			p.authFailed = true
			p.log.Error().Str("error", e.Error()).Msg("kafka rejected pgoutbox's TLS or SASL setup; check the security.*, ssl.* and sasl.* properties; retrying")
			p.changed(false, "kafka authentication failed")
		}
	default:
		p.log.Debug().Str("error", e.Error()).Msg("kafka client error")
	}
}

func (p *Producer) changed(up bool, reason string) {
	if p.StateChanged != nil {
		p.StateChanged(up, reason)
	}
}

// logLibrdkafka forwards librdkafka's own log lines at debug level: they repeat on
// every reconnect attempt, and Run already logs each broker state change once.
func (p *Producer) logLibrdkafka(l kafka.LogEvent) {
	p.log.Debug().Str("facility", l.Tag).Int("syslog_level", l.Level).Msg(l.Message)
}

// InQueue reports messages not yet delivered.
func (p *Producer) InQueue() int { return p.p.Len() }

// Close purges what is still queued and closes the producer. Purged messages get
// no ack, so their transactions stay unconfirmed and are replayed.
func (p *Producer) Close() {
	_ = p.p.Purge(kafka.PurgeQueue | kafka.PurgeInFlight | kafka.PurgeNonBlocking)
	done := make(chan struct{})
	go func() {
		// Events must be drained or Close blocks on a full channel.
		for {
			select {
			case <-done:
				return
			case _, ok := <-p.p.Events():
				if !ok {
					return
				}
			}
		}
	}()
	p.p.Close()
	close(done)
}
