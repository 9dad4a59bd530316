package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// brokerFault makes the broker answer the next n requests of one kind with an
// error instead of handling them.
type brokerFault struct {
	key  kmsg.Key
	code int16
	n    int64
}

// inject installs f on c and returns the number of requests answered so far.
func (f brokerFault) inject(c *kfake.Cluster) *atomic.Int64 {
	var hits atomic.Int64
	c.ControlKey(int16(f.key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if hits.Load() >= f.n {
			c.DropControl()
			return nil, nil, false
		}
		hits.Add(1)
		c.KeepControl()
		return errorResponse(req, f.code), nil, true
	})
	return &hits
}

func (f brokerFault) String() string {
	return fmt.Sprintf("%d %s answered %s", f.n, f.key.Name(), kerr.ErrorForCode(f.code).(*kerr.Error).Message)
}

// errorResponse answers req with code: in every partition for Produce, as the
// top-level error for InitProducerID.
func errorResponse(req kmsg.Request, code int16) kmsg.Response {
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = code
				rp.BaseOffset = -1
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.InitProducerIDRequest:
		resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = code
		resp.ProducerID = -1
		resp.ProducerEpoch = -1
		return resp
	}
	panic(fmt.Sprintf("errorResponse: %T", req))
}

// What pgoutbox must do about a broker error.
const (
	// recovered: librdkafka retries by itself, invisibly to the pipeline, and its
	// idempotence keeps the retries from writing anything twice.
	recovered = "recovered"
	// rebuilt: the producer failed fatally; pgoutbox replaces it and resumes from
	// the checkpoint.
	rebuilt = "rebuilt"
	// resumed: librdkafka failed the messages' delivery; pgoutbox resumes from the
	// checkpoint (it never re-sends single messages, which could reorder a key).
	resumed = "resumed"
)

// produceFaultCase is one kind of broker error and what pgoutbox must do about it.
type produceFaultCase struct {
	name   string
	faults []brokerFault
	want   string
	// rounds is how many times the faults are injected, each after the previous
	// round fired and the pipeline had a moment to recover; 0 means once.
	rounds int
}

// faultWindow is --max-in-flight in these tests.
const faultWindow = 1000

// runProduceFault streams under writers, injects the faults once events flow, and
// checks: pgoutbox stays up, nothing committed is missing, per-key order of first
// occurrences holds, and the pipeline restarted if and only if it had to.
func runProduceFault(t *testing.T, c produceFaultCase) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	p := e.start("--max-in-flight", fmt.Sprint(faultWindow))
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.startWriters(3, 6)
	e.consume(30*time.Second, func(r []kafkatest.Record) bool { return len(r) > 0 }) // events flow
	for round := 0; round < max(c.rounds, 1); round++ {
		if round > 0 {
			// Let a rebuilt producer get its first batch on every partition
			// acknowledged before the next fault. A broker (Kafka as well as
			// kfake) accepts the first batch of a producer id it does not know
			// with any sequence number, so if a new producer's first request
			// failed, its next one in flight would be appended across the gap,
			// which no client setting prevents (see "Failure behaviour" in the
			// README). These rounds test the gap-less guarantee of a producer
			// the broker knows.
			waitFor(t, 30*time.Second, "the pipeline streaming again", func() bool {
				return strings.Count(p.out.String(), `"message":"streaming"`) > round
			})
			time.Sleep(time.Second)
		}
		var hits []*atomic.Int64
		for _, f := range c.faults {
			hits = append(hits, f.inject(e.kafka))
		}
		waitFor(t, 30*time.Second, fmt.Sprint(c.faults), func() bool {
			for i, f := range c.faults {
				if hits[i].Load() < f.n {
					return false
				}
			}
			return true
		})
	}
	time.Sleep(time.Second) // recover, and stream on after the fault
	stop()
	e.settle(w)
	total := w.total()
	recs := e.consumeAll(w, 60*time.Second)
	v := w.check(t, recs)
	p.mustBeRunning("despite producer errors")
	out := p.out.String()
	errs := restartErrors(out)
	restarts := len(errs)
	rebuild := strings.Contains(out, "kafka producer failed, rebuilding it")
	t.Logf("%s: %d events, %d records, %d duplicates; %d pipeline restarts %q",
		c.name, total, v.records, v.duplicates, restarts, errs)
	switch c.want {
	case recovered:
		if restarts > 0 {
			t.Errorf("the pipeline restarted; librdkafka should have retried: %q", errs)
		}
		if v.duplicates > 0 {
			t.Errorf("%d duplicates from retries of an idempotent producer", v.duplicates)
		}
	case rebuilt:
		if !rebuild {
			t.Errorf("fatal producer error, but pgoutbox did not log rebuilding the producer:\n%s", tail(out, 30))
		}
	case resumed:
		if restarts == 0 {
			t.Errorf("failed deliveries, but the pipeline never resumed from the checkpoint")
		}
	}
	if limit := restarts * (faultWindow + maxWriterTxn); v.duplicates > limit {
		t.Errorf("%d duplicates after %d pipeline restarts exceed %d (--max-in-flight %d plus one open transaction each)",
			v.duplicates, restarts, limit, faultWindow)
	}
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}

// firstLine returns the first output line containing s, or "".
func firstLine(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// restartErrors returns the error of every pipeline restart pgoutbox logged.
func restartErrors(out string) []string {
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		var line struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(l), &line) == nil && strings.HasPrefix(line.Message, "pipeline stopped") {
			errs = append(errs, line.Error)
		}
	}
	return errs
}

// TestProduceRetriableErrors: the broker refuses five Produce requests with an
// error librdkafka's idempotent producer retries with the same producer id and
// sequence numbers. UNKNOWN_PRODUCER_ID on the oldest request in flight is
// recovered too: librdkafka bumps the epoch itself and retries
// (rd_kafka_handle_idempotent_Produce_error).
func TestProduceRetriableErrors(t *testing.T) {
	for _, code := range []*kerr.Error{kerr.NotLeaderForPartition, kerr.LeaderNotAvailable, kerr.RequestTimedOut,
		kerr.NotEnoughReplicas, kerr.NotEnoughReplicasAfterAppend, kerr.KafkaStorageError, kerr.CorruptMessage, kerr.UnknownProducerID} {
		t.Run(code.Message, func(t *testing.T) {
			n := int64(5)
			if code == kerr.UnknownProducerID {
				n = 1
			}
			runProduceFault(t, produceFaultCase{name: code.Message, want: recovered,
				faults: []brokerFault{{key: kmsg.Produce, code: code.Code, n: n}}})
		})
	}
}

// TestProduceFatalErrors: broker answers that make librdkafka's idempotent
// producer fail fatally, because it can no longer guarantee order or once-ness. An
// out-of-order sequence for the oldest request in flight is fatal
// (rd_kafka_handle_idempotent_Produce_error); so is an authorization error when a
// new producer asks for its id (rd_kafka_idemp_check_error), here for the producer
// pgoutbox builds to replace the first. pgoutbox must stay up, replace the
// producer and resume from the checkpoint.
func TestProduceFatalErrors(t *testing.T) {
	cases := []produceFaultCase{
		{name: "OUT_OF_ORDER_SEQUENCE_NUMBER", want: rebuilt,
			faults: []brokerFault{{key: kmsg.Produce, code: kerr.OutOfOrderSequenceNumber.Code, n: 1}}},
		{name: "OUT_OF_ORDER_SEQUENCE_NUMBER, then CLUSTER_AUTHORIZATION_FAILED for the new producer", want: rebuilt,
			faults: []brokerFault{{key: kmsg.Produce, code: kerr.OutOfOrderSequenceNumber.Code, n: 1},
				{key: kmsg.InitProducerID, code: kerr.ClusterAuthorizationFailed.Code, n: 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runProduceFault(t, c) })
	}
}

// TestProduceFailedDelivery: broker errors that librdkafka neither retries nor
// treats as fatal for a non-transactional idempotent producer: it fails the
// request's messages and bumps the epoch. pgoutbox must resume from the checkpoint
// without losing or reordering anything. librdkafka keeps sending the partition's
// later messages under the new epoch, so unless the producer stops at the failed
// batch (enable.gapless.guarantee makes such an error fatal), later events of a key
// can reach Kafka before the failed ones are re-sent. The race is narrow, so the
// fault is injected several times.
func TestProduceFailedDelivery(t *testing.T) {
	for _, code := range []*kerr.Error{kerr.InvalidProducerEpoch, kerr.UnknownServerError} {
		t.Run(code.Message, func(t *testing.T) {
			runProduceFault(t, produceFaultCase{name: code.Message, want: resumed, rounds: 5,
				faults: []brokerFault{{key: kmsg.Produce, code: code.Code, n: 1}}})
		})
	}
}

// TestProduceSlowBroker: every Produce request waits in the broker, so acks come
// slowly and pgoutbox hits --max-in-flight and stops reading. It must keep
// answering the walsender (whose timeout is made short here), and deliver
// everything once the broker is fast again.
func TestProduceSlowBroker(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	e.exec(fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET wal_sender_timeout = '2s'`, role, e.db))
	const window = 100
	p := e.start("--max-in-flight", fmt.Sprint(window))
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.startWriters(2, 6)
	e.consume(30*time.Second, func(r []kafkatest.Record) bool { return len(r) > 0 })

	var slow atomic.Bool
	var delayed atomic.Int64
	slow.Store(true)
	e.kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slow.Load() {
			delayed.Add(1)
			e.kafka.SleepControl(func() { time.Sleep(300 * time.Millisecond) })
		}
		return nil, nil, false // then handled as usual; the control stays
	})
	t.Cleanup(func() { slow.Store(false) })
	first, _ := e.slotConfirmed()
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, active := e.slotConfirmed(); !active {
			t.Fatalf("slot inactive while the broker was slow: the walsender timed out or pgoutbox disconnected\n%s", tail(p.out.String(), 20))
		}
	}
	behind := w.total() - len(e.consume(3*time.Second, nil))
	last, _ := e.slotConfirmed()
	slow.Store(false)
	stop()
	e.settle(w)
	recs := e.consumeAll(w, 60*time.Second)
	v := w.check(t, recs)
	t.Logf("slow broker for 6s: %d Produce requests delayed 300ms, Kafka %d events behind the database at the end, confirmed %s → %s; %d events, %d duplicates",
		delayed.Load(), behind, first, last, w.total(), v.duplicates)
	if behind <= window {
		t.Errorf("Kafka only %d events behind: the broker was not slow enough to fill the %d in-flight window", behind, window)
	}
	if strings.Contains(p.out.String(), "pipeline stopped") {
		t.Errorf("the pipeline restarted under backpressure:\n%s", firstLine(p.out.String(), "pipeline stopped"))
	}
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}
