package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkareal"
)

// The real-broker tests share one Apache Kafka broker (KRaft, one node), started on
// first use and stopped by TestMain: a JVM start costs seconds, a topic nothing. The
// broker has every listener a test needs: PLAINTEXT for the tests' own clients,
// SASL_PLAINTEXT with a SCRAM-SHA-512 user, and SSL with a throwaway CA. Topic
// auto-creation is off, as in most production clusters: each test creates its topics.

// scramUser is the SCRAM-SHA-512 user of the package's broker.
var scramUser = kafkareal.User{Name: "pgoutbox", Password: "scram-secret"}

var (
	realOnce   sync.Once
	realBroker *kafkareal.Broker
	realErr    error
)

// realKafka returns the package's broker, starting it on first use. Without Java or
// the jars the test is skipped, or fails when CI is set.
func realKafka(t *testing.T) *kafkareal.Broker {
	t.Helper()
	kafkareal.Require(t)
	realOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		realBroker, realErr = kafkareal.Start(ctx, kafkareal.Options{
			SCRAMUsers: []kafkareal.User{scramUser},
			TLS:        true,
			Logf:       func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
		})
	})
	if realErr != nil {
		t.Fatalf("start the real Kafka broker: %v", realErr)
	}
	if !realBroker.Running() {
		t.Fatalf("the real Kafka broker is not running (an earlier test stopped it); log:\n%s", realBroker.LogTail(40))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tail of the real broker's log %s:\n%s", realBroker.LogFile(), realBroker.LogTail(40))
		}
	})
	return realBroker
}

// stopRealKafka stops the package's broker if a test started it.
func stopRealKafka() {
	if realBroker != nil {
		if err := realBroker.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stop the real Kafka broker: %v\n", err)
		}
	}
}

// realTopics are the aggregate types the shared writers and the bad-row rows use;
// useRealKafka creates their topics.
var realTopics = []string{"t0", "t1", "t2", "order"}

// useRealKafka points e at the package's broker, with topics of its own.
func (e *env) useRealKafka(partitions int32) {
	e.t.Helper()
	e.real = realKafka(e.t)
	e.brokers = e.real.Brokers()
	e.prefix = fmt.Sprintf("%s.", e.db)
	if partitions <= 0 {
		partitions = 4
	}
	for _, agg := range realTopics {
		e.createTopic(e.prefix+agg, int(partitions), nil)
	}
	e.createTopic(e.deadLetterTopic(), 1, nil)
}

// realArgs route pgoutbox's topics to e's own names on the shared broker.
func (e *env) realArgs() []string {
	return []string{
		"--topic", e.prefix + "{aggregatetype}",
		"--checkpoint-topic", e.prefix + "checkpoints",
		"--dead-letter-topic", e.deadLetterTopic(),
	}
}

func (e *env) deadLetterTopic() string {
	if e.real == nil {
		return "outbox.dead-letter"
	}
	return e.prefix + "dead-letter"
}

// eventTopic is the topic pgoutbox routes aggregate type agg to.
func (e *env) eventTopic(agg string) string {
	if e.real == nil {
		return "outbox.event." + agg
	}
	return e.prefix + agg
}

// topicRegex matches the event topics of e.
func (e *env) topicRegex() string {
	if e.real == nil {
		return `^outbox\.event\.`
	}
	return "^" + regexp.QuoteMeta(e.prefix) + "(t[0-9]+|order)$"
}

// createTopic creates a topic on the real broker.
func (e *env) createTopic(name string, partitions int, configs map[string]string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.real.CreateTopic(ctx, name, partitions, configs); err != nil {
		e.t.Fatal(err)
	}
}
