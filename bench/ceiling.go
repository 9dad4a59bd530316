package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// ceilingResult is how fast the broker and the consumer alone go: a franz-go
// idempotent producer writes outbox-shaped records straight into kfake.
type ceilingResult struct {
	events   int
	acked    time.Duration // first produce → every ack
	arrived  time.Duration // first produce → consumer holds every id
	tally    tally
	produced produceCount
}

// runCeiling measures kfake's own ingest speed with the same topics, record
// shape and consumer as the backlog cases. Everything runs in this process,
// as kfake and the consumer do in the backlog cases.
func runCeiling(ctx context.Context, events int, say func(string, ...any)) (res ceilingResult, err error) {
	res.events = events
	kafka, produced, err := startKafka()
	if err != nil {
		return res, err
	}
	defer kafka.Close()
	brokers := kafkatest.Brokers(kafka)
	col, err := startCollector(brokers, false, nil)
	if err != nil {
		return res, err
	}
	defer col.close()
	// acks=all and idempotence are franz-go's defaults, as in pgoutbox.
	prod, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		return res, fmt.Errorf("kfake ceiling: new producer: %w", err)
	}
	defer prod.Close()

	recs := make([]*kgo.Record, events)
	expect := make(map[string]bool, events)
	for n := range recs {
		id := uuid()
		expect[id] = true
		topic, key, value := outboxRecord(n)
		recs[n] = &kgo.Record{
			Topic:   topic,
			Key:     key,
			Value:   value,
			Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(id)}},
		}
	}
	col.expectIDs(expect)

	var acked atomic.Int64
	var produceErr atomic.Value
	allAcked := make(chan struct{})
	start := time.Now()
	for _, r := range recs {
		prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErr.CompareAndSwap(nil, err)
			}
			if acked.Add(1) == int64(events) {
				close(allAcked)
			}
		})
	}
	select {
	case <-allAcked:
		res.acked = time.Since(start)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if err, _ := produceErr.Load().(error); err != nil {
		return res, fmt.Errorf("kfake ceiling: produce: %w", err)
	}
	if err := col.wait(ctx, nil, drainTimeout); err != nil {
		return res, err
	}
	res.arrived = col.completeAt.Sub(start)
	res.produced = produced.snapshot()
	res.tally = col.tally()
	say("kfake ceiling: %d records acked in %v, consumed in %v", events, res.acked.Round(time.Millisecond), res.arrived.Round(time.Millisecond))
	return res, nil
}

// outboxRecord is the n-th record the way pgoutbox publishes a backlog row: the
// topic of its aggregate type, the aggregate id as key, a payload like
// bench_payload's.
func outboxRecord(n int) (topic string, key, value []byte) {
	value, _ = json.Marshal(map[string]any{
		"seq": n, "customerId": fmt.Sprintf("cust-%d", n%5000), "amount": float64(n%100000) / 100,
		"currency": "EUR", "status": "CREATED",
		"items": []any{map[string]any{"sku": fmt.Sprintf("SKU-%d", n%300), "qty": 1 + n%5, "price": 19.99}},
		"note":  strings.Repeat("0123456789abcdef", 4),
	})
	return "outbox.event." + aggregateTypes[n%len(aggregateTypes)], []byte(fmt.Sprint((n * 7919) % 1000)), value
}

// uuid returns a random version-4 UUID in text form.
func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
