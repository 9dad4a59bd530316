package kafkatest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newProducer(t *testing.T, brokers string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...)}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, ctx context.Context, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func atLeast(n int) func([]Record) bool {
	return func(all []Record) bool { return len(all) >= n }
}

// byValue indexes records by value; tests give every record a unique one.
func byValue(t *testing.T, recs []Record) map[string]Record {
	t.Helper()
	m := make(map[string]Record, len(recs))
	for _, r := range recs {
		if _, dup := m[string(r.Value)]; dup {
			t.Fatalf("value %q consumed twice", r.Value)
		}
		m[string(r.Value)] = r
	}
	return m
}

func TestConsumeReturnsEveryField(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := New(t, Options{SeedTopics: map[string]int32{"events": 3}})
	brokers := Brokers(c)
	if got := len(strings.Split(brokers, ",")); got != 1 {
		t.Fatalf("Brokers = %q, want one broker", brokers)
	}
	p := newProducer(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))

	ts := time.UnixMilli(1_700_000_000_123)
	produce(t, ctx, p,
		&kgo.Record{Topic: "events", Partition: 0, Key: []byte("k1"), Value: []byte("v1"), Timestamp: ts,
			Headers: []kgo.RecordHeader{{Key: "id", Value: []byte("e1")}, {Key: "type", Value: []byte("created")}}},
		&kgo.Record{Topic: "events", Partition: 1, Key: []byte("k2"), Value: []byte{}, Timestamp: ts.Add(time.Second)},
		&kgo.Record{Topic: "events", Partition: 2, Key: []byte("k3"), Value: nil, Timestamp: ts.Add(2 * time.Second)},
		&kgo.Record{Topic: "events", Partition: 0, Key: nil, Value: []byte("v4"), Timestamp: ts.Add(3 * time.Second)},
	)

	recs, err := Consume(ctx, brokers, ConsumeOptions{Topics: []string{"events"}, Until: atLeast(4)})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("consumed %d records, want 4: %+v", len(recs), recs)
	}
	got := make(map[int32][]Record)
	for _, r := range recs {
		if r.Topic != "events" {
			t.Errorf("record from topic %q", r.Topic)
		}
		got[r.Partition] = append(got[r.Partition], r)
	}
	if len(got[0]) != 2 || len(got[1]) != 1 || len(got[2]) != 1 {
		t.Fatalf("records per partition: %d %d %d, want 2 1 1", len(got[0]), len(got[1]), len(got[2]))
	}

	r1, r4 := got[0][0], got[0][1]
	if string(r1.Key) != "k1" || string(r1.Value) != "v1" || r1.ValueIsNull || r1.Offset != 0 || !r1.Timestamp.Equal(ts) {
		t.Errorf("record 1 = %+v", r1)
	}
	if len(r1.Headers) != 2 || string(r1.Headers["id"]) != "e1" || string(r1.Headers["type"]) != "created" {
		t.Errorf("record 1 headers = %q", r1.Headers)
	}
	if r4.Key != nil || string(r4.Value) != "v4" || r4.Offset != 1 || r4.Headers != nil || !r4.Timestamp.Equal(ts.Add(3*time.Second)) {
		t.Errorf("record 4 (null key) = %+v", r4)
	}
	empty, tomb := got[1][0], got[2][0]
	if string(empty.Key) != "k2" || empty.ValueIsNull || empty.Value == nil || len(empty.Value) != 0 || empty.Offset != 0 {
		t.Errorf("empty-value record = %+v (Value nil: %v)", empty, empty.Value == nil)
	}
	if string(tomb.Key) != "k3" || !tomb.ValueIsNull || tomb.Value != nil || tomb.Offset != 0 {
		t.Errorf("tombstone = %+v", tomb)
	}
	if r1.ProducerID < 0 {
		// kgo producers are idempotent by default.
		t.Errorf("ProducerID = %d, want the idempotent producer's id", r1.ProducerID)
	}

	// A regex finds the same records; Idle ends the read.
	recs, err = Consume(ctx, brokers, ConsumeOptions{TopicRegex: "^ev", Idle: 500 * time.Millisecond})
	if err != nil || len(recs) != 4 {
		t.Fatalf("regex consume: %d records, err %v; want 4, nil", len(recs), err)
	}
	// An unknown topic yields nothing once Idle passes.
	recs, err = Consume(ctx, brokers, ConsumeOptions{Topics: []string{"missing"}, Idle: 300 * time.Millisecond})
	if err != nil || len(recs) != 0 {
		t.Fatalf("consume of a missing topic: %d records, err %v; want 0, nil", len(recs), err)
	}
	// When ctx ends first, Consume returns what it has and ctx's error.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	recs, err = Consume(short, brokers, ConsumeOptions{Topics: []string{"events"}, Until: atLeast(5)})
	if err != context.DeadlineExceeded || len(recs) != 4 {
		t.Fatalf("consume past ctx: %d records, err %v; want 4, context deadline exceeded", len(recs), err)
	}
	if _, err := Consume(ctx, brokers, ConsumeOptions{}); err == nil {
		t.Fatal("Consume with no topics returned nil")
	}
}

func TestConsumerSeesLaterRecords(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := New(t, Options{Partitions: 2})
	brokers := Brokers(c)
	// The topic does not exist yet: the consumer must find it when it appears.
	cons, err := NewConsumer(brokers, ConsumeOptions{Topics: []string{"later"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	p := newProducer(t, brokers, kgo.AllowAutoTopicCreation())
	var want []string
	for i := range 20 {
		v := fmt.Sprintf("v%d", i)
		want = append(want, v)
		produce(t, ctx, p, &kgo.Record{Topic: "later", Key: []byte(v), Value: []byte(v)})
	}
	var got []Record
	for len(got) < len(want) {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatalf("poll after %d records: %v", len(got), err)
		}
		got = append(got, recs...)
	}
	seen := byValue(t, got)
	parts := make(map[int32]bool)
	for _, v := range want {
		r, ok := seen[v]
		if !ok {
			t.Fatalf("record %s not consumed", v)
		}
		parts[r.Partition] = true
	}
	if len(parts) != 2 {
		t.Errorf("auto-created topic used partitions %v, want 0 and 1", parts)
	}
}

func TestReadCommittedHidesAbortedTransaction(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := New(t, Options{SeedTopics: map[string]int32{"tx": 1}})
	brokers := Brokers(c)
	p := newProducer(t, brokers, kgo.TransactionalID("kafkatest-tx"), kgo.DefaultProduceTopic("tx"))

	txn := func(commit kgo.TransactionEndTry, values ...string) {
		t.Helper()
		if err := p.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			produce(t, ctx, p, &kgo.Record{Value: []byte(v)})
		}
		if err := p.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	txn(kgo.TryAbort, "aborted-1", "aborted-2")
	txn(kgo.TryCommit, "committed-1", "committed-2")

	// Uncommitted reads prove the aborted records reached the log.
	all, err := Consume(ctx, brokers, ConsumeOptions{Topics: []string{"tx"}, Until: atLeast(4)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := byValue(t, all)["aborted-1"]; !ok {
		t.Fatalf("read_uncommitted did not see the aborted records: %+v", all)
	}

	// The aborted records sit before the committed ones in the only
	// partition, so once the committed ones arrive the aborted ones would
	// have too.
	committed, err := Consume(ctx, brokers, ConsumeOptions{Topics: []string{"tx"}, ReadCommitted: true, Until: atLeast(2)})
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, r := range committed {
		values = append(values, string(r.Value))
	}
	if strings.Join(values, ",") != "committed-1,committed-2" {
		t.Fatalf("read_committed saw %v, want [committed-1 committed-2]", values)
	}
}

func TestDataDirSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	c, err := Start(Options{DataDir: dir, SeedTopics: map[string]int32{"kept": 2}})
	if err != nil {
		t.Fatal(err)
	}
	brokers := Brokers(c)
	p := newProducer(t, brokers)
	for i := range 10 {
		v := fmt.Sprintf("v%d", i)
		produce(t, ctx, p, &kgo.Record{Topic: "kept", Key: []byte(v), Value: []byte(v),
			Headers: []kgo.RecordHeader{{Key: "n", Value: []byte(v)}}})
	}
	before, err := Consume(ctx, brokers, ConsumeOptions{Topics: []string{"kept"}, Until: atLeast(10)})
	if err != nil {
		t.Fatal(err)
	}
	ports := Ports(c)
	p.Close()
	c.Close()

	c, err = Start(Options{DataDir: dir, Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if got := Brokers(c); got != brokers {
		t.Fatalf("restarted cluster listens on %s, want %s", got, brokers)
	}
	after, err := Consume(ctx, brokers, ConsumeOptions{Topics: []string{"kept"}, Until: atLeast(10)})
	if err != nil {
		t.Fatalf("consume after restart: %v (got %d records)", err, len(after))
	}
	if len(after) != 10 {
		t.Fatalf("%d records after restart, want 10", len(after))
	}
	old := byValue(t, before)
	for _, r := range after {
		o := old[string(r.Value)]
		if o.Partition != r.Partition || o.Offset != r.Offset || !bytes.Equal(o.Key, r.Key) ||
			!bytes.Equal(o.Headers["n"], r.Headers["n"]) || !o.Timestamp.Equal(r.Timestamp) {
			t.Errorf("record %s changed across restart: %+v -> %+v", r.Value, o, r)
		}
	}

	// The restarted log keeps counting offsets where it stopped.
	p = newProducer(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	r := &kgo.Record{Topic: "kept", Partition: 0, Value: []byte("new")}
	produce(t, ctx, p, r)
	var n0 int64
	for _, o := range before {
		if o.Partition == 0 {
			n0++
		}
	}
	if r.Offset != n0 {
		t.Fatalf("first offset after restart = %d, want %d", r.Offset, n0)
	}
}
