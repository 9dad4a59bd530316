package e2e

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestPublishesOutboxRows checks the Debezium-compatible mapping end to end: topic
// from aggregatetype, key from aggregateid, payload as stored, header id, and the
// commit time as the record timestamp.
func TestPublishesOutboxRows(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	before := time.Now().Add(-time.Second)
	var want []event
	for tx := 0; tx < 10; tx++ {
		var evs []event
		for i := 0; i < 10; i++ {
			n := tx*10 + i
			typ := "order"
			if n%3 == 0 {
				typ = "customer"
			}
			evs = append(evs, event{ID: uuidFor(n), Type: typ, AggID: fmt.Sprintf("agg-%d", n%7), Kind: "Created", Payload: fmt.Sprintf(`{"n": %d}`, n)})
		}
		e.insertTx(evs...)
		want = append(want, evs...)
	}
	recs := e.consumeN(len(want), 30*time.Second)
	byID := map[string]int{}
	for i, r := range recs {
		byID[string(r.Headers["id"])] = i
	}
	for _, w := range want {
		i, ok := byID[w.ID]
		if !ok {
			t.Fatalf("event %s not published", w.ID)
		}
		r := recs[i]
		if r.Topic != "outbox.event."+w.Type {
			t.Errorf("event %s: topic %q, want %q", w.ID, r.Topic, "outbox.event."+w.Type)
		}
		if string(r.Key) != w.AggID {
			t.Errorf("event %s: key %q, want %q", w.ID, r.Key, w.AggID)
		}
		// The partition a Java producer (Debezium) would choose: murmur2 of the key,
		// here as franz-go computes it, over kfake's 10 partitions.
		java := kgo.StickyKeyPartitioner(nil).ForTopic(r.Topic).Partition(&kgo.Record{Key: r.Key}, 10)
		if int(r.Partition) != java {
			t.Errorf("event %s with key %q: partition %d, a Java producer uses %d", w.ID, r.Key, r.Partition, java)
		}
		var got, exp any
		if err := json.Unmarshal(r.Value, &got); err != nil {
			t.Fatalf("event %s: value %q is not JSON: %v", w.ID, r.Value, err)
		}
		_ = json.Unmarshal([]byte(w.Payload), &exp)
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("event %s: value %s, want %s", w.ID, r.Value, w.Payload)
		}
		if r.Timestamp.Before(before) || r.Timestamp.After(time.Now().Add(time.Second)) {
			t.Errorf("event %s: timestamp %s is not the commit time", w.ID, r.Timestamp)
		}
	}
	if len(recs) != len(want) {
		t.Errorf("consumed %d records, want %d (duplicates?)", len(recs), len(want))
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}
