package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"
)

// TxnCheckpoint is the record pgoutbox writes to the checkpoint topic in every Kafka
// transaction, next to the events: the transaction's events and this record become
// visible together or not at all, so on restart the record says exactly which
// events read_committed consumers have seen.
type TxnCheckpoint struct {
	Slot     string `json:"slot"`
	SystemID string `json:"system_id"`
	Database string `json:"database"`
	// LSN is the commit end LSN of the newest PostgreSQL transaction whose events
	// are all in Kafka.
	LSN pglogrepl.LSN `json:"-"`
	// PartialFinal and PartialEvents describe a PostgreSQL transaction split across
	// Kafka transactions (it was larger than a batch): its final LSN and how many of
	// its events, in stream order, are already in Kafka.
	PartialFinal  pglogrepl.LSN `json:"-"`
	PartialEvents int           `json:"partial_events,omitempty"`
	UpdatedAt     time.Time     `json:"updated_at"`
}

type txnCheckpointJSON struct {
	TxnCheckpoint
	LSN          string `json:"lsn"`
	PartialFinal string `json:"partial_final,omitempty"`
}

func (c TxnCheckpoint) marshal() []byte {
	j := txnCheckpointJSON{TxnCheckpoint: c, LSN: c.LSN.String()}
	if c.PartialEvents > 0 {
		j.PartialFinal = c.PartialFinal.String()
	}
	b, _ := json.Marshal(j) // strings, ints and a time: cannot fail
	return b
}

func unmarshalTxnCheckpoint(b []byte) (TxnCheckpoint, error) {
	var j txnCheckpointJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return TxnCheckpoint{}, err
	}
	c := j.TxnCheckpoint
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

// AbortTransaction aborts the open transaction.
func (p *Producer) AbortTransaction(ctx context.Context) error {
	if err := p.p.AbortTransaction(ctx); err != nil {
		return fmt.Errorf("abort kafka transaction: %w", err)
	}
	return nil
}

// ProduceCheckpoint adds the checkpoint record to the open transaction. Its delivery
// report has Control set.
func (p *Producer) ProduceCheckpoint(topic, key string, cp TxnCheckpoint) error {
	p.dlMu.Lock()
	defer p.dlMu.Unlock()
	var k kafka.Message
	var hdr []kafka.Header
	m := &Message{Topic: topic, Key: []byte(key), Value: cp.marshal()}
	return p.produce(m, &k, &hdr, kindControl)
}

// EndStaleTransaction makes sure no transaction of an older instance with the same
// transactional id can still commit. Real Kafka aborts a fenced producer's open
// transaction in InitTransactions; some brokers (kfake before franz-go PR #1398)
// leave it attached to the transactional id, and the next commit would publish the
// dead instance's half-written batch. Aborting a transaction of our own, after a
// record really reached the broker, ends it on any broker. The record is a copy of
// the newest checkpoint record, so it is harmless even where it is seen.
func (p *Producer) EndStaleTransaction(ctx context.Context, topic, key string, cp TxnCheckpoint) error {
	if err := p.BeginTransaction(); err != nil {
		return err
	}
	report := make(chan kafka.Event, 1)
	err := p.p.Produce(&kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
		Key:            []byte(key),
		Value:          cp.marshal(),
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
// unless it exists.
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
		if c := r.Error.Code(); c != kafka.ErrNoError && c != kafka.ErrTopicAlreadyExists {
			return fmt.Errorf("create checkpoint topic %s: %w", topic, r.Error)
		}
	}
	return nil
}

// ReadCheckpoint returns the newest committed checkpoint record with key, reading the
// checkpoint topic with read_committed. It must run after InitTransactions, which
// aborts a transaction a crashed instance left open: until then the open
// transaction would hold back what read_committed can read.
func ReadCheckpoint(ctx context.Context, cfg Config, topic, key string) (TxnCheckpoint, bool, error) {
	cm := kafka.ConfigMap{
		"bootstrap.servers":    cfg.Brokers,
		"group.id":             "pgoutbox-checkpoint-reader",
		"isolation.level":      "read_committed",
		"enable.auto.commit":   false,
		"enable.partition.eof": true,
		"auto.offset.reset":    "earliest",
	}
	for k, v := range cfg.Properties {
		if consumerProperty(k) {
			cm[k] = v
		}
	}
	c, err := kafka.NewConsumer(&cm)
	if err != nil {
		return TxnCheckpoint{}, false, fmt.Errorf("read checkpoint topic: %w", err)
	}
	defer c.Close()
	_, high, err := c.QueryWatermarkOffsets(topic, 0, int(time.Until(deadline(ctx, 30*time.Second)).Milliseconds()))
	if err != nil {
		return TxnCheckpoint{}, false, fmt.Errorf("read checkpoint topic %s: %w", topic, err)
	}
	// Each Kafka transaction adds a record and a commit marker: the newest record
	// for key is usually among the last few hundred offsets. Read from there, and
	// from the beginning only if it is not.
	for _, from := range []int64{max(0, high-512), 0} {
		cp, found, err := scanCheckpoint(ctx, c, topic, key, from)
		if err != nil || found || from == 0 {
			return cp, found, err
		}
	}
	return TxnCheckpoint{}, false, nil
}

func scanCheckpoint(ctx context.Context, c *kafka.Consumer, topic, key string, from int64) (TxnCheckpoint, bool, error) {
	err := c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: kafka.Offset(from)}})
	if err != nil {
		return TxnCheckpoint{}, false, fmt.Errorf("read checkpoint topic %s: %w", topic, err)
	}
	var cp TxnCheckpoint
	found := false
	for {
		if ctx.Err() != nil {
			return cp, false, fmt.Errorf("read checkpoint topic %s: %w", topic, ctx.Err())
		}
		switch e := c.Poll(200).(type) {
		case *kafka.Message:
			if string(e.Key) != key {
				continue
			}
			rec, err := unmarshalTxnCheckpoint(e.Value)
			if err != nil {
				return cp, false, fmt.Errorf("checkpoint record at %s offset %d: %w", topic, e.TopicPartition.Offset, err)
			}
			cp, found = rec, true
		case kafka.PartitionEOF:
			return cp, found, nil
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

func deadline(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}
