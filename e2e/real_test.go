package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// The real-broker subset: what kfake cannot vouch for. Each test runs pgoutbox against
// the package's Apache Kafka broker (realkafka_test.go) on topics of its own.

// TestRealKafkaDelivery: concurrent writers, one pgoutbox: every event arrives once,
// with its id header, and each key's events in commit order.
func TestRealKafkaDelivery(t *testing.T) {
	e := newEnv(t, envOptions{realKafka: true})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.startWriters(4, 10)
	time.Sleep(2 * time.Second)
	stop()
	e.settle(w)
	v := w.check(t, e.consumeAll(w, 60*time.Second))
	t.Logf("%d events from 4 writers: %d records, %d duplicates", w.total(), v.records, v.duplicates)
	if v.duplicates != 0 {
		t.Errorf("%d duplicates without any crash (idempotent producer)", v.duplicates)
	}
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}

// TestRealKafkaExactlyOnceKill9: with --exactly-once, pgoutbox is killed with SIGKILL
// several times while writers commit; a read_committed consumer sees every committed
// event exactly once, in per-key order. Each restart fences the killed instance's
// transactional id on Kafka's own transaction coordinator.
func TestRealKafkaExactlyOnceKill9(t *testing.T) {
	e := newEnv(t, envOptions{realKafka: true})
	e.readCommitted = true
	args := []string{"--exactly-once", "--txn-max-events", "300", "--txn-interval", "50ms", "--max-in-flight", "1000"}
	p := e.start(args...)
	p.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.startWriters(4, 10)
	rng := rand.New(rand.NewPCG(5, 6))
	const kills = 5
	for i := 0; i < kills; i++ {
		time.Sleep(time.Duration(200+rng.IntN(700)) * time.Millisecond)
		p.kill()
		e.waitInactive(10 * time.Second)
		p = e.start(args...)
		p.waitLog(`"streaming"`, 30*time.Second)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	e.settle(w)
	v := w.check(t, e.consumeAll(w, 60*time.Second))
	t.Logf("exactly-once on Kafka: %d events, %d kills, %d records, %d duplicates", w.total(), kills, v.records, v.duplicates)
	if v.duplicates != 0 {
		t.Errorf("%d duplicates seen by a read_committed consumer in exactly-once mode", v.duplicates)
	}
	e.stopClean(p)
}

// TestRealKafkaZombieFenced: an exactly-once pgoutbox is frozen (SIGSTOP) past
// wal_sender_timeout, so PostgreSQL lets a second instance with the same slot and
// transactional id take over; the second fences the first on Kafka. The first is then
// continued: it must publish nothing more (its producer is fenced) and stand by or
// exit, and a read_committed consumer sees every event exactly once.
func TestRealKafkaZombieFenced(t *testing.T) {
	e := newEnv(t, envOptions{realKafka: true})
	e.readCommitted = true
	e.exec(fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET wal_sender_timeout = '2s'`, role, e.db))
	args := []string{"--exactly-once", "--txn-max-events", "100", "--txn-interval", "50ms", "--standby-retry", "1s"}
	zombie := e.start(args...)
	zombie.waitLog(`"streaming"`, 30*time.Second)
	w, stop := e.startWriters(2, 6)
	e.consume(30*time.Second, func(r []kafkatest.Record) bool { return len(r) > 20 })

	zombie.signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			zombie.signal(syscall.SIGCONT)
		}
	}()
	waitFor(t, 20*time.Second, "the frozen instance's walsender to time out", func() bool {
		_, active := e.slotConfirmed()
		return !active
	})
	second := e.start(args...)
	second.waitLog(`"streaming"`, 30*time.Second)
	time.Sleep(time.Second) // the second publishes under the new epoch
	fencedAt := len(zombie.out.String())
	zombie.signal(syscall.SIGCONT)
	stopped = false
	time.Sleep(3 * time.Second) // the zombie wakes up, meets the fence
	stop()
	e.settle(w)
	v := w.check(t, e.consumeAll(w, 60*time.Second))
	t.Logf("zombie fenced: %d events, %d records, %d duplicates", w.total(), v.records, v.duplicates)
	if v.duplicates != 0 {
		t.Errorf("%d duplicates seen by a read_committed consumer after the zombie woke up", v.duplicates)
	}
	woke := zombie.out.String()[fencedAt:]
	// Nothing of the zombie after the fence, even uncommitted: in each partition,
	// once the second instance's producer epoch wrote, no older epoch follows.
	all, err := kafkatest.Consume(context.Background(), e.brokers, kafkatest.ConsumeOptions{TopicRegex: e.topicRegex(), Idle: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	newest := map[string]int16{}
	late := 0
	for _, r := range all {
		k := fmt.Sprintf("%s[%d]/%d", r.Topic, r.Partition, r.ProducerID)
		if ep, ok := newest[k]; ok && r.ProducerEpoch < ep {
			late++
			if late <= 3 {
				t.Errorf("%s offset %d: a record of producer epoch %d after epoch %d wrote (the fenced instance published)", k, r.Offset, r.ProducerEpoch, ep)
			}
		}
		newest[k] = max(newest[k], r.ProducerEpoch)
	}
	epochs := map[int16]int{}
	for _, r := range all {
		epochs[r.ProducerEpoch]++
	}
	t.Logf("records by producer epoch (read_uncommitted): %v", epochs)
	// It may meet the fence (its next Kafka request) or first the broken
	// replication connection; either way it must not take the slot back.
	t.Logf("the woken instance reported the fence: %v", strings.Contains(woke, "fenced"))
	select {
	case <-zombie.done:
		t.Logf("the fenced instance exited with %d", zombie.exitCode())
	default:
		if !strings.Contains(woke, "standing by") {
			t.Errorf("the fenced instance runs but does not stand by:\n%s", tail(nonDebug(woke), 12))
		}
	}
	t.Logf("the fenced instance after SIGCONT:\n%s", tail(nonDebug(woke), 12))
	second.mustBeRunning("after the zombie woke up")
	// A standing-by zombie would take the slot over as soon as the second stops.
	zombie.kill()
	e.stopClean(second)
}

// nonDebug drops pgoutbox's debug lines.
func nonDebug(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, `"level":"debug"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestRealKafkaBrokerRestart: the broker is restarted on its data while writers
// commit, cleanly under an at-least-once pgoutbox and after SIGKILL under an
// exactly-once one; pgoutbox stays up and nothing is lost.
func TestRealKafkaBrokerRestart(t *testing.T) {
	for _, mode := range []string{"at-least-once", "exactly-once"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{realKafka: true})
			args := []string{"--max-in-flight", "500"}
			if mode == "exactly-once" {
				e.readCommitted = true
				args = append(args, "--exactly-once", "--txn-max-events", "100")
			}
			p := e.start(args...)
			p.waitLog(`"streaming"`, 30*time.Second)
			w, stop := e.startWriters(3, 8)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			time.Sleep(time.Second)
			if mode == "exactly-once" {
				e.real.Kill()
			}
			if err := e.real.Restart(ctx); err != nil {
				t.Fatalf("restart: %v", err)
			}
			p.mustBeRunning("the broker's restart")
			time.Sleep(time.Second)
			stop()
			e.settle(w)
			v := w.check(t, e.consumeAll(w, 90*time.Second))
			t.Logf("%s, broker restarted: %d events, %d records, %d duplicates", mode, w.total(), v.records, v.duplicates)
			if mode == "exactly-once" && v.duplicates != 0 {
				t.Errorf("%d duplicates for a read_committed consumer", v.duplicates)
			}
			p.mustBeRunning("after the broker restarts")
			e.stopClean(p)
		})
	}
}

// TestRealKafkaMissingTopic: with topic auto-creation off on the broker, a row for a
// topic that does not exist stops pgoutbox (--on-error=fail) naming the topic, or
// goes to the dead-letter topic; as on kfake (TestBadRowFail, TestDeadLetter).
func TestRealKafkaMissingTopic(t *testing.T) {
	c := badRowCase{name: "missing topic", real: true,
		flags: []string{"--kafka-config", "topic.metadata.propagation.max.ms=2000"},
		bad:   outboxRow{Type: "missing", Payload: `{"seq": 0}`}, topic: "outbox.event.missing", words: []string{"unknown topic"}}
	t.Run("fail", func(t *testing.T) { testBadRowFail(t, c) })
	t.Run("dead-letter", func(t *testing.T) { testDeadLetter(t, c, false) })
	t.Run("exactly-once dead-letter", func(t *testing.T) { testDeadLetter(t, c, true) })
}

// brokerLimit is max.message.bytes of the topic the oversize test writes to: the
// broker refuses a larger record batch. pgoutbox's producer keeps its default
// message.max.bytes (1 MB), so librdkafka sends the record and the broker says no.
const brokerLimit = 100000

// TestRealKafkaTooLargeForBroker: a record larger than the broker's limit (but not
// the producer's) goes to the dead-letter topic with --on-error=dead-letter, and the
// rows around it are published in per-key order.
func TestRealKafkaTooLargeForBroker(t *testing.T) {
	for _, mode := range []string{"at-least-once", "exactly-once"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, envOptions{realKafka: true})
			e.createTopic(e.eventTopic("big"), 2, map[string]string{"max.message.bytes": fmt.Sprint(brokerLimit)})
			flags := []string{"--on-error", "dead-letter"}
			var opts []kgo.Opt
			if mode == "exactly-once" {
				flags = append(flags, "--exactly-once")
				opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			}
			p := e.start(flags...)
			p.waitLog(`"streaming"`, 30*time.Second)
			big := `{"pad": "` + strings.Repeat("x", 150000) + `"}`
			id := uuidFor(badIndex)
			e.insertRows(goodRow(1, "k1", 1), goodRow(2, "k2", 1))
			e.insertRows(goodRow(3, "k1", 2), outboxRow{ID: &id, Type: "big", Key: "k1", Payload: big}, goodRow(4, "k1", 3))
			e.insertRows(goodRow(5, "k1", 4), goodRow(6, "k2", 2))
			var good []string
			for i := 1; i <= 6; i++ {
				good = append(good, uuidFor(i))
			}
			recs := consumeAs(t, e.brokers, e.topicRegex(), opts, 60*time.Second, hasIDs(good...))
			if !hasIDs(good...)(recs) {
				t.Fatalf("the rows around the oversize one were not all published:\n%s", tail(nonDebug(p.out.String()), 30))
			}
			// Per key, the first occurrences keep commit order. At least once,
			// the events before the refused one that were already acknowledged are
			// sent again when pgoutbox resumes from its checkpoint to dead-letter it
			// (the broker refused it after they were sent, unlike librdkafka's own
			// size check, which refuses it before); exactly once, never.
			seqs, seen, dups := map[string][]int{}, map[string]bool{}, 0
			for _, r := range recs {
				if seen[string(r.Headers["id"])] {
					dups++
					continue
				}
				seen[string(r.Headers["id"])] = true
				var v struct{ Seq int }
				if err := json.Unmarshal(r.Value, &v); err != nil {
					t.Fatalf("value %q: %v", r.Value, err)
				}
				seqs[string(r.Key)] = append(seqs[string(r.Key)], v.Seq)
			}
			if got := fmt.Sprint(seqs["k1"], seqs["k2"]); got != "[1 2 3 4] [1 2]" {
				t.Errorf("per-key order of first occurrences: k1 then k2 carried seq %s, want [1 2 3 4] [1 2]", got)
			}
			t.Logf("%d duplicates of the events around the refused one", dups)
			if mode == "exactly-once" && dups != 0 {
				t.Errorf("%d duplicates for a read_committed consumer", dups)
			}
			dl := consumeAs(t, e.brokers, "^"+regexp.QuoteMeta(e.deadLetterTopic())+"$", opts, 30*time.Second,
				func(r []kafkatest.Record) bool { return len(r) > 0 })
			if len(dl) != 1 {
				t.Fatalf("%d dead-letter records, want 1:\n%s", len(dl), tail(nonDebug(p.out.String()), 30))
			}
			var v deadLetterValue
			if err := json.Unmarshal(dl[0].Value, &v); err != nil {
				t.Fatalf("dead-letter value is not JSON: %v", err)
			}
			t.Logf("dead-letter record: %s", truncateForLog(string(dl[0].Value), 400))
			if v.ID != id || v.Topic != e.eventTopic("big") {
				t.Errorf("dead-letter id %q topic %q, want %q on %q", v.ID, v.Topic, id, e.eventTopic("big"))
			}
			mentions(t, v.Error, "too large")
			if v.PayloadSize == nil || *v.PayloadSize != len(big) {
				t.Errorf("payload_size %v, want %d", v.PayloadSize, len(big))
			}
			e.stopClean(p)
			if n := e.pendingChanges(); n != 0 {
				t.Errorf("slot would re-send %d inserts after a clean stop", n)
			}
		})
	}
}

// TestRealKafkaSecurity: pgoutbox publishes over SASL/SCRAM-SHA-512 and over TLS
// (verifying the broker against ssl.ca.location) given with --kafka-config; with a
// wrong password it stays up and says Kafka rejected its credentials.
func TestRealKafkaSecurity(t *testing.T) {
	scramProps := func(pw string) []string {
		return []string{"security.protocol=SASL_PLAINTEXT", "sasl.mechanism=SCRAM-SHA-512",
			"sasl.username=" + scramUser.Name, "sasl.password=" + pw}
	}
	publishes := func(t *testing.T, e *env, brokers string, props []string, consumer kgo.Opt) {
		t.Helper()
		p := e.start(append(kafkaConfigFlags(props), "--kafka-brokers", brokers)...)
		p.waitLog(`"streaming"`, 30*time.Second)
		e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{"n":1}`},
			event{ID: uuidFor(2), Type: "t0", AggID: "b", Kind: "Created", Payload: `{"n":2}`})
		recs := consumeAs(t, brokers, e.topicRegex(), []kgo.Opt{consumer}, 30*time.Second, hasIDs(uuidFor(1), uuidFor(2)))
		if !hasIDs(uuidFor(1), uuidFor(2))(recs) {
			t.Fatalf("events did not reach Kafka:\n%s", tail(nonDebug(p.out.String()), 30))
		}
		e.stopClean(p)
		noSecret(t, p.out.String(), scramUser.Password)
	}
	t.Run("SASL SCRAM-SHA-512", func(t *testing.T) {
		e := newEnv(t, envOptions{realKafka: true})
		publishes(t, e, e.real.SASLBrokers(), scramProps(scramUser.Password),
			kgo.SASL(scram.Auth{User: scramUser.Name, Pass: scramUser.Password}.AsSha512Mechanism()))
	})
	t.Run("TLS", func(t *testing.T) {
		e := newEnv(t, envOptions{realKafka: true})
		publishes(t, e, e.real.TLSBrokers(), []string{"security.protocol=SSL", "ssl.ca.location=" + e.real.CAFile()},
			kgo.DialTLSConfig(e.real.TLSConfig()))
	})
	t.Run("SASL wrong password", func(t *testing.T) {
		e := newEnv(t, envOptions{realKafka: true})
		const wrong = "Wrong-scram-pw-42"
		p := e.start(append(kafkaConfigFlags(scramProps(wrong)), "--kafka-brokers", e.real.SASLBrokers())...)
		p.waitLog(`"streaming"`, 30*time.Second)
		e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{}`})
		p.waitLog("kafka rejected pgoutbox's TLS or SASL setup", 30*time.Second)
		t.Logf("%s", firstLine(p.out.String(), "kafka rejected"))
		time.Sleep(2 * time.Second)
		p.mustBeRunning("on a Kafka authentication failure (it must retry)")
		noSecret(t, p.out.String(), wrong, scramUser.Password)
		p.kill()
		e.waitInactive(10 * time.Second)
		if n := e.pendingChanges(); n != 1 {
			t.Errorf("slot would send %d inserts, want the 1 Kafka never got", n)
		}
	})
}
