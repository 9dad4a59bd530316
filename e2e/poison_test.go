package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// refusePoison makes the broker refuse, with a permanent MESSAGE_TOO_LARGE, every
// Produce request that carries a record containing "POISON" — the broker-side
// refusal (a topic's max.message.bytes below the producer's) that pgoutbox cannot
// see coming.
func refusePoison(e *env, deadLetterToo bool) {
	e.kafka.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.kafka.KeepControl()
		r := req.(*kmsg.ProduceRequest)
		poison := false
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				poison = poison || (strings.HasPrefix(t.Topic, "outbox.event.") || deadLetterToo) && bytes.Contains(p.Records, []byte("POISON"))
			}
		}
		if !poison {
			return nil, nil, false
		}
		return errorResponse(req, kerr.MessageTooLarge.Code), nil, true
	})
}

// TestPoisonRowRefusedByBroker: a row the broker refuses permanently is
// dead-lettered (or stops pgoutbox under --on-error=fail), and the other rows, before
// and after it on the same key, arrive once each in order.
func TestPoisonRowRefusedByBroker(t *testing.T) {
	for _, c := range []struct {
		name, policy  string
		deadLetterToo bool
		exactlyOnce   bool
	}{
		{"dead-letter", "dead-letter", false, false},
		{"fail", "fail", false, false},
		{"dead-letter refused too", "dead-letter", true, false},
		{"exactly-once dead-letter", "dead-letter", false, true},
		{"exactly-once fail", "fail", false, true},
	} {
		policy := c.policy
		if c.deadLetterToo {
			policy = "fail" // behaves as fail
		}
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 1}})
			args := []string{"--on-error", c.policy}
			if c.exactlyOnce {
				args = append(args, "--exactly-once")
				e.readCommitted = true
			}
			p := e.start(args...)
			p.waitLog(`"streaming"`, 30*time.Second)
			refusePoison(e, c.deadLetterToo)
			for i := 1; i <= 30; i++ {
				payload := fmt.Sprintf(`{"seq": %d}`, i)
				if i == 15 {
					payload = `{"seq": 15, "x": "POISON"}`
				}
				e.insertTx(event{ID: uuidFor(i), Type: "order", AggID: "k", Kind: "T", Payload: payload})
			}
			if policy == "fail" {
				code := p.wait(60 * time.Second)
				// The refused event itself is named, found by publishing the refused
				// batch again one event per request.
				if code != 1 || !strings.Contains(p.out.String(), "Message size too large") || !strings.Contains(p.out.String(), uuidFor(15)) {
					t.Fatalf("exit %d; output:\n%s", code, tail(p.out.String(), 10))
				}
				return
			}
			recs := e.consumeN(29, 60*time.Second)
			last := 0
			seen := map[string]bool{}
			for _, r := range recs {
				id := string(r.Headers["id"])
				if seen[id] {
					if c.exactlyOnce {
						t.Errorf("event %s read twice with read_committed", id)
					}
					continue
				}
				seen[id] = true
				if id == uuidFor(15) {
					t.Errorf("the refused row was published")
				}
				var v struct{ Seq int }
				if err := json.Unmarshal(r.Value, &v); err != nil {
					t.Fatal(err)
				}
				n := v.Seq
				if n <= last {
					t.Errorf("seq %d after %d", n, last)
				}
				last = n
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			dl, _ := kafkatest.Consume(ctx, e.brokers, kafkatest.ConsumeOptions{Topics: []string{"outbox.dead-letter"}, ReadCommitted: c.exactlyOnce, Until: func(r []kafkatest.Record) bool { return len(r) > 0 }})
			if len(dl) == 0 || string(dl[0].Headers["id"]) != uuidFor(15) {
				t.Fatalf("dead-letter topic holds %d records, want the refused row", len(dl))
			}
		})
	}
}
