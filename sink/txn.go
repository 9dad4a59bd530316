package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/checkpoint"
)

// checkpointRecord is the JSON form of the record pgoutbox writes to the checkpoint
// topic in every Kafka transaction, next to the events: the transaction's events and
// this record become visible together or not at all, so on restart the record says
// exactly which events read_committed consumers have seen (see checkpoint.Checkpoint
// for the fields).
type checkpointRecord struct {
	Slot          string    `json:"slot"`
	SystemID      string    `json:"system_id"`
	Database      string    `json:"database"`
	Timeline      int32     `json:"timeline,omitempty"`
	LSN           string    `json:"lsn"`
	PartialFinal  string    `json:"partial_final,omitempty"`
	PartialEvents int       `json:"partial_events,omitempty"`
	UpdatedAt     time.Time `json:"updated_at"`
}

func marshalCheckpoint(c checkpoint.Checkpoint) []byte {
	j := checkpointRecord{Slot: c.Slot, SystemID: c.SystemID, Database: c.Database, Timeline: c.Timeline,
		LSN: c.LSN.String(), PartialEvents: c.PartialEvents, UpdatedAt: c.UpdatedAt}
	if c.PartialEvents > 0 {
		j.PartialFinal = c.PartialFinal.String()
	}
	b, _ := json.Marshal(j) // strings, ints and a time: cannot fail
	return b
}

func unmarshalCheckpoint(b []byte) (checkpoint.Checkpoint, error) {
	var j checkpointRecord
	if err := json.Unmarshal(b, &j); err != nil {
		return checkpoint.Checkpoint{}, err
	}
	c := checkpoint.Checkpoint{Slot: j.Slot, SystemID: j.SystemID, Database: j.Database, Timeline: j.Timeline,
		PartialEvents: j.PartialEvents, UpdatedAt: j.UpdatedAt}
	var err error
	if c.LSN, err = pglogrepl.ParseLSN(j.LSN); err != nil {
		return c, fmt.Errorf("lsn %q: %w", j.LSN, err)
	}
	if j.PartialFinal != "" {
		if c.PartialFinal, err = pglogrepl.ParseLSN(j.PartialFinal); err != nil {
			return c, fmt.Errorf("partial_final %q: %w", j.PartialFinal, err)
		}
	}
	return c, nil
}

// checkpointPartition is the partition of the checkpoint topic pgoutbox writes and
// reads: records are keyed by transactional id, but hashing keys over the partitions
// of a topic someone created with more than one would scatter them where the reader
// does not look.
const checkpointPartition = 0

// transactionTimeout is how long a Kafka transaction may stay open before the broker
// aborts it. librdkafka also uses it as the message timeout in transactional mode.
const transactionTimeout = 60 * time.Second

// NewTransactional creates a transactional producer with transactional.id txnID.
// A new producer with the same id fences every older one (a zombie instance) and
// aborts its open transaction when InitTransactions runs.
//
// transaction.timeout.ms from --kafka-config wins over the default: a backfill is one
// Kafka transaction and must commit within it.
func NewTransactional(cfg Config, txnID string, log zerolog.Logger) (*Producer, error) {
	ms := strconv.Itoa(int(transactionTimeout.Milliseconds()))
	if v, ok := cfg.Properties["transaction.timeout.ms"]; ok {
		ms = v
	}
	return New(cfg, map[string]string{
		"transactional.id":       txnID,
		"transaction.timeout.ms": ms,
		// librdkafka requires message.timeout.ms <= transaction.timeout.ms.
		"message.timeout.ms": ms,
	}, log)
}

// InitTransactions registers the transactional id with the coordinator, fencing older
// producers and aborting their open transaction.
func (p *Producer) InitTransactions(ctx context.Context) error {
	if err := p.p.InitTransactions(ctx); err != nil {
		return fmt.Errorf("init kafka transactions: %w", err)
	}
	return nil
}

// BeginTransaction starts a Kafka transaction.
func (p *Producer) BeginTransaction() error {
	if err := p.p.BeginTransaction(); err != nil {
		return fmt.Errorf("begin kafka transaction: %w", err)
	}
	return nil
}

// CommitTransaction flushes and commits the open transaction. On an error that is
// retriable it retries; on one that requires an abort it aborts and returns the error.
func (p *Producer) CommitTransaction(ctx context.Context) error {
	for {
		err := p.p.CommitTransaction(ctx)
		if err == nil {
			return nil
		}
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.IsRetriable() && ctx.Err() == nil {
			continue
		}
		if errors.As(err, &kerr) && kerr.TxnRequiresAbort() {
			actx, cancel := context.WithTimeout(context.Background(), transactionTimeout)
			aerr := p.p.AbortTransaction(actx)
			cancel()
			if aerr != nil {
				return fmt.Errorf("commit kafka transaction: %w; abort: %v", err, aerr)
			}
		}
		return fmt.Errorf("commit kafka transaction: %w", err)
	}
}

// Flush waits up to timeout for every queued message to be delivered and its report
// handed to Run, and returns how many are still outstanding. CommitTransaction
// flushes too, but cannot be interrupted: if a message fails while it flushes, it
// waits its whole timeout for messages that will never be sent. Flushing first, in
// short steps, lets the caller give up when a delivery report has doomed the
// transaction. (librdkafka's own flush polls for events in steps of its timeout, so
// the last step always waits it out: this polls the queue length instead.)
func (p *Producer) Flush(timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := p.p.Len()
		if n == 0 || !time.Now().Before(deadline) {
			return n
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// AbortTransaction aborts the open transaction.
func (p *Producer) AbortTransaction(ctx context.Context) error {
	if err := p.p.AbortTransaction(ctx); err != nil {
		return fmt.Errorf("abort kafka transaction: %w", err)
	}
	return nil
}

// ProduceCheckpoint adds the checkpoint record to the open transaction. Its delivery
// report has Control set. ErrQueueFull means: wait and try again.
func (p *Producer) ProduceCheckpoint(topic, key string, cp checkpoint.Checkpoint) error {
	m := &Message{Topic: topic, Partition: checkpointPartition, Partitioned: true, Key: []byte(key), Value: marshalCheckpoint(cp)}
	return p.produce(m, kindControl)
}

// EndStaleTransaction makes sure no transaction of an older instance with the same
// transactional id can still commit. Real Kafka (4.3, checked) aborts a fenced
// producer's open transaction in InitTransactions; kfake (963be6fd5989, the version
// the tests use) leaves it attached to the transactional id, and the next commit
// would publish the dead instance's half-written batch, while until then it holds
// back what read_committed readers of its partitions see. Aborting a transaction of
// our own, after a record really reached the broker, ends it on any broker; on Kafka
// it costs one small aborted transaction at start. The record (cp) is never visible.
func (p *Producer) EndStaleTransaction(ctx context.Context, topic, key string, cp checkpoint.Checkpoint) error {
	if err := p.BeginTransaction(); err != nil {
		return err
	}
	report := make(chan kafka.Event, 1)
	err := p.p.Produce(&kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: checkpointPartition},
		Key:            []byte(key),
		Value:          marshalCheckpoint(cp),
	}, report)
	if err != nil {
		return fmt.Errorf("end stale transaction: %w", err)
	}
	select {
	case ev := <-report:
		if m, ok := ev.(*kafka.Message); ok && m.TopicPartition.Error != nil {
			return fmt.Errorf("end stale transaction: %w", m.TopicPartition.Error)
		}
	case <-ctx.Done():
		return fmt.Errorf("end stale transaction: %w", ctx.Err())
	}
	return p.AbortTransaction(ctx)
}

// EnsureCheckpointTopic creates the checkpoint topic, compacted with one partition,
// unless it exists; an existing one must be compacted, or the broker's retention
// would one day delete the only record that says what is in Kafka.
func (p *Producer) EnsureCheckpointTopic(ctx context.Context, topic string) error {
	admin, err := kafka.NewAdminClientFromProducer(p.p)
	if err != nil {
		return fmt.Errorf("checkpoint topic: %w", err)
	}
	defer admin.Close()
	res, err := admin.CreateTopics(ctx, []kafka.TopicSpecification{{
		Topic:             topic,
		NumPartitions:     1,
		ReplicationFactor: -1,
		Config:            map[string]string{"cleanup.policy": "compact"},
	}})
	if err != nil {
		return fmt.Errorf("create checkpoint topic %s: %w", topic, err)
	}
	for _, r := range res {
		switch c := r.Error.Code(); c {
		case kafka.ErrNoError:
			return nil
		case kafka.ErrTopicAlreadyExists:
		default:
			return fmt.Errorf("create checkpoint topic %s: %w", topic, r.Error)
		}
	}
	cfgs, err := admin.DescribeConfigs(ctx, []kafka.ConfigResource{{Type: kafka.ResourceTopic, Name: topic}})
	if err != nil {
		return fmt.Errorf("describe checkpoint topic %s: %w", topic, err)
	}
	for _, c := range cfgs {
		if c.Error.Code() != kafka.ErrNoError {
			return fmt.Errorf("describe checkpoint topic %s: %w", topic, c.Error)
		}
		if policy := c.Config["cleanup.policy"].Value; !strings.Contains(policy, "compact") {
			return &SetupError{Msg: fmt.Sprintf("checkpoint topic %s has cleanup.policy=%s; it must be compacted, or retention deletes the record that says what is in Kafka: "+
				"run kafka-configs --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact, or name another topic with --checkpoint-topic", topic, policy, topic)}
		}
	}
	return nil
}

// SetupError is a Kafka setup mistake that no retry fixes.
type SetupError struct{ Msg string }

func (e *SetupError) Error() string { return e.Msg }

// ReadCheckpoint returns the newest committed checkpoint record with key, reading the
// checkpoint topic's partition with read_committed. It must run after
// InitTransactions, which aborts a transaction a crashed instance with this key left
// open.
//
// Instances of other slots may share the topic, and an open transaction of theirs
// holds back the last stable offset a read_committed reader stops at, maybe before
// this instance's own newest record. So ReadCheckpoint first waits until the last
// stable offset reaches the end of the log as it was when it started: every
// transaction open then has finished (they commit within --txn-interval, or the
// broker aborts them after transaction.timeout.ms).
func (p *Producer) ReadCheckpoint(ctx context.Context, cfg Config, topic, key string) (checkpoint.Checkpoint, bool, error) {
	stable, err := p.stableEnd(ctx, topic)
	if err != nil {
		return checkpoint.Checkpoint{}, false, err
	}
	if stable == 0 {
		return checkpoint.Checkpoint{}, false, nil
	}
	cm := kafka.ConfigMap{
		"bootstrap.servers":    cfg.Brokers,
		"group.id":             "pgoutbox-checkpoint-reader",
		"isolation.level":      "read_committed",
		"enable.auto.commit":   false,
		"enable.partition.eof": true,
		"auto.offset.reset":    "earliest",
		// The read ends at the log's end: do not let the broker hold the last
		// fetch for half a second waiting for more.
		"fetch.wait.max.ms": 10,
	}
	for k, v := range cfg.Properties {
		if consumerProperty(k) {
			cm[k] = v
		}
	}
	c, err := kafka.NewConsumer(&cm)
	if err != nil {
		return checkpoint.Checkpoint{}, false, fmt.Errorf("read checkpoint topic: %w", err)
	}
	defer c.Close()
	// Each Kafka transaction adds a record and a commit marker: the newest record
	// for key is usually among the last few hundred offsets. Read from there, and
	// from the beginning only if it is not.
	for _, from := range []int64{max(0, stable-512), 0} {
		cp, found, err := scanCheckpoint(ctx, c, topic, key, from, stable)
		if err != nil || found || from == 0 {
			return cp, found, err
		}
	}
	return checkpoint.Checkpoint{}, false, nil
}

// stableEnd waits until the checkpoint partition's last stable offset reaches its
// end offset as first seen, and returns it.
func (p *Producer) stableEnd(ctx context.Context, topic string) (int64, error) {
	admin, err := kafka.NewAdminClientFromProducer(p.p)
	if err != nil {
		return 0, fmt.Errorf("read checkpoint topic: %w", err)
	}
	defer admin.Close()
	tp := kafka.TopicPartition{Topic: &topic, Partition: checkpointPartition}
	offset := func(level kafka.IsolationLevel) (int64, error) {
		res, err := admin.ListOffsets(ctx, map[kafka.TopicPartition]kafka.OffsetSpec{tp: kafka.LatestOffsetSpec}, kafka.SetAdminIsolationLevel(level))
		if err != nil {
			return 0, fmt.Errorf("read checkpoint topic %s: %w", topic, err)
		}
		for _, info := range res.ResultInfos {
			if info.Error.Code() != kafka.ErrNoError {
				return 0, fmt.Errorf("read checkpoint topic %s: %w", topic, info.Error)
			}
			return int64(info.Offset), nil
		}
		return 0, fmt.Errorf("read checkpoint topic %s: no offset for partition %d", topic, checkpointPartition)
	}
	end, err := offset(kafka.IsolationLevelReadUncommitted)
	if err != nil {
		return 0, err
	}
	for {
		stable, err := offset(kafka.IsolationLevelReadCommitted)
		if err != nil || stable >= end {
			return stable, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("read checkpoint topic %s: a transaction of another producer holds its last stable offset at %d, below %d: %w", topic, stable, end, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// scanCheckpoint reads the partition from offset from up to offset end (exclusive)
// and returns the last record with key.
func scanCheckpoint(ctx context.Context, c *kafka.Consumer, topic, key string, from, end int64) (checkpoint.Checkpoint, bool, error) {
	err := c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: checkpointPartition, Offset: kafka.Offset(from)}})
	if err != nil {
		return checkpoint.Checkpoint{}, false, fmt.Errorf("read checkpoint topic %s: %w", topic, err)
	}
	var cp checkpoint.Checkpoint
	found := false
	for {
		if ctx.Err() != nil {
			return cp, false, fmt.Errorf("read checkpoint topic %s: %w", topic, ctx.Err())
		}
		switch e := c.Poll(50).(type) {
		case *kafka.Message:
			if int64(e.TopicPartition.Offset) >= end {
				return cp, found, nil
			}
			if string(e.Key) != key {
				continue
			}
			rec, err := unmarshalCheckpoint(e.Value)
			if err != nil {
				return cp, false, fmt.Errorf("checkpoint record at %s offset %d: %w", topic, e.TopicPartition.Offset, err)
			}
			cp, found = rec, true
		case kafka.PartitionEOF:
			if int64(e.Offset) >= end {
				return cp, found, nil
			}
		case kafka.Error:
			if e.IsFatal() || e.Code() == kafka.ErrUnknownTopicOrPart {
				return cp, false, fmt.Errorf("read checkpoint topic %s: %w", topic, e)
			}
		}
	}
}

// consumerProperty reports whether a user property also applies to a consumer:
// connection and security settings do, producer tuning does not.
func consumerProperty(k string) bool {
	for _, prefix := range []string{"security.", "ssl.", "sasl.", "client.", "socket.", "broker.", "api.version", "enable.ssl", "reconnect."} {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}
