package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// republishArgs are the flags of a `pgoutbox republish` run against e.
func (e *env) republishArgs(state string, extra ...string) []string {
	return append([]string{"republish",
		"--postgres-url", e.url(),
		"--kafka-brokers", e.brokers,
		"--resume-file", state,
		"--log-level", "debug",
	}, extra...)
}

// republishState reads the rows a republish state file says are acknowledged.
func republishState(t *testing.T, path string) (rows int64, done bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Rows int64 `json:"rows"`
		Done bool  `json:"done"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("republish state %s: %v\n%s", path, err, b)
	}
	return st.Rows, st.Done
}

// TestRepublish: while writers commit and the main pgoutbox streams, `pgoutbox
// republish` publishes the rows matching --where again, mapped as the stream mapped
// them, and nothing else; the live stream loses nothing and keeps per-key order. A
// SIGTERM stops a republish cleanly (exit 3, position saved), and --resume finishes
// it; a row Kafka refuses — in the producer (message.max.bytes) or in the broker —
// stops it with exit 1 naming the row.
func TestRepublish(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	relay := e.start()
	relay.waitLog(`"streaming"`, 30*time.Second)

	// History to republish: 7 keys, so --order-by aggregateid repeats and the id must
	// break ties across pages. Other rows must not be republished.
	const nHistory = 300
	var history, all []string
	for tx := 0; tx < 3; tx++ {
		var evs []event
		for i := tx * nHistory / 3; i < (tx+1)*nHistory/3; i++ {
			evs = append(evs, event{ID: uuidFor(1000 + i), Type: "history", AggID: fmt.Sprintf("h%d", i%7), Kind: "T", Payload: fmt.Sprintf(`{"i": %d}`, i)})
			history = append(history, uuidFor(1000+i))
		}
		e.insertTx(evs...)
	}
	var evs []event
	for i := 0; i < 40; i++ {
		evs = append(evs, event{ID: uuidFor(5000 + i), Type: "other", AggID: "o", Kind: "T", Payload: `{}`})
		all = append(all, uuidFor(5000+i))
	}
	big := uuidFor(6000)
	evs = append(evs, event{ID: big, Type: "big", AggID: "b", Kind: "T", Payload: `{"x": "` + strings.Repeat("x", 20000) + `"}`})
	poison := uuidFor(7002)
	for i := 0; i < 5; i++ {
		p := fmt.Sprintf(`{"i": %d}`, i)
		if uuidFor(7000+i) == poison {
			p = `{"i": "POISON"}`
		}
		evs = append(evs, event{ID: uuidFor(7000 + i), Type: "poison", AggID: "p", Kind: "T", Payload: p})
	}
	e.insertTx(evs...)
	all = append(append(all, history...), big)
	e.waitIDs(all, 30*time.Second)

	w, stopWriters := e.background(t, 2, 5)
	defer stopWriters()
	state := filepath.Join(e.dir, "republish.state")
	where := []string{"--where", "aggregatetype = 'history'", "--order-by", "aggregateid", "--batch", "40"}

	// 1. The whole history again.
	p := e.startArgs(nil, e.republishArgs(state, where...))
	if code := p.wait(60 * time.Second); code != 0 {
		t.Fatalf("republish exit %d; output:\n%s", code, tail(p.out.String(), 30))
	}
	if rows, done := republishState(t, state); rows != nHistory || !done {
		t.Errorf("state after the run: rows %d done %v, want %d true", rows, done, nHistory)
	}
	if !strings.Contains(p.out.String(), "republish done") {
		t.Errorf("no 'republish done' line:\n%s", tail(p.out.String(), 10))
	}
	// --resume of a finished republish has nothing to do.
	if code, out := e.runArgs(30*time.Second, e.republishArgs(state, append(where, "--resume")...)); code != 0 || !strings.Contains(out, "already finished") {
		t.Errorf("--resume of a finished republish: exit %d\n%s", code, tail(out, 10))
	}

	// 2. Interrupted by SIGTERM, then resumed. Kafka answers the republish's produce
	// requests slowly so that the signal lands mid-way.
	slow := atomic.Bool{}
	slow.Store(true)
	e.kafka.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.kafka.KeepControl()
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == "outbox.event.history" && slow.Load() {
				e.kafka.SleepControl(func() { time.Sleep(30 * time.Millisecond) })
			}
		}
		return nil, nil, false
	})
	state2 := filepath.Join(e.dir, "republish2.state")
	where2 := []string{"--where", "aggregatetype = 'history'", "--batch", "10"}
	p = e.startArgs(nil, e.republishArgs(state2, where2...))
	waitFor(t, 60*time.Second, "the interrupted republish to acknowledge a few pages", func() bool {
		rows, _ := republishState(t, state2)
		return rows >= 50
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 3 {
		t.Fatalf("republish after SIGTERM: exit %d, want 3; output:\n%s", code, tail(p.out.String(), 20))
	}
	stoppedAt, done := republishState(t, state2)
	if done || stoppedAt >= nHistory || !strings.Contains(p.out.String(), "--resume") {
		t.Errorf("after SIGTERM: state rows %d done %v; output:\n%s", stoppedAt, done, tail(p.out.String(), 5))
	}
	slow.Store(false)
	if code, out := e.runArgs(30*time.Second, e.republishArgs(state2, where2...)); code != 2 || !strings.Contains(out, "--resume") {
		t.Errorf("a new run over an unfinished state: exit %d, want 2 asking for --resume\n%s", code, tail(out, 5))
	}
	if code, out := e.runArgs(60*time.Second, e.republishArgs(state2, append(where2, "--resume")...)); code != 0 {
		t.Fatalf("--resume: exit %d\n%s", code, tail(out, 20))
	}
	if rows, done := republishState(t, state2); rows != nHistory || !done {
		t.Errorf("state after --resume: rows %d done %v", rows, done)
	}

	// 3. Refused in the producer: a 20 kB row over message.max.bytes.
	code, out := e.runArgs(30*time.Second, e.republishArgs(filepath.Join(e.dir, "big.state"),
		"--where", "aggregatetype = 'big'", "--kafka-config", "message.max.bytes=10000"))
	if code != 1 || !strings.Contains(out, "id="+big) {
		t.Errorf("a row over message.max.bytes: exit %d, want 1 naming id=%s\n%s", code, big, tail(out, 10))
	}

	// The live stream: every writer event arrived, in order per key, while all this
	// ran; the main pgoutbox is still streaming.
	relay.mustBeRunning("while republish ran")
	stopWriters()
	e.settle(w)
	e.consumeAll(w, 60*time.Second)
	recs, err := kafkatest.Consume(context.Background(), e.brokers, kafkatest.ConsumeOptions{TopicRegex: `^outbox\.event\.`, Idle: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var live []kafkatest.Record
	count := map[string]int{}
	first := map[string]kafkatest.Record{}
	for _, r := range recs {
		id := string(r.Headers["id"])
		count[id]++
		if strings.HasPrefix(r.Topic, "outbox.event.t") {
			live = append(live, r)
			continue
		}
		if f, ok := first[id]; !ok {
			first[id] = r
		} else if f.Topic != r.Topic || !bytes.Equal(f.Key, r.Key) || !bytes.Equal(f.Value, r.Value) || fmt.Sprint(f.Headers) != fmt.Sprint(r.Headers) || f.Partition != r.Partition {
			t.Errorf("id %s republished differently: %s/%d key %q value %q headers %v, first %s/%d key %q value %q headers %v",
				id, r.Topic, r.Partition, r.Key, r.Value, r.Headers, f.Topic, f.Partition, f.Key, f.Value, f.Headers)
		}
	}
	v := w.check(t, live)
	if v.duplicates != 0 {
		t.Errorf("live stream: %d duplicates", v.duplicates)
	}
	// Stream once, the full run once, the interrupted and resumed run at least once
	// (a page cut short by the signal is published again by --resume).
	redone := 0
	for _, id := range history {
		switch count[id] {
		case 3:
		case 4:
			redone++
		default:
			t.Errorf("history id %s in Kafka %d times, want 3 (stream and two republishes)", id, count[id])
		}
	}
	if redone > 10 {
		t.Errorf("%d history ids published twice by the interrupted run and --resume, more than one page of 10", redone)
	}
	for _, id := range all[:40] {
		if count[id] != 1 {
			t.Errorf("id %s outside --where in Kafka %d times, want 1", id, count[id])
		}
	}
	if count[big] != 1 {
		t.Errorf("the refused big row in Kafka %d times, want 1 (the stream's)", count[big])
	}
	t.Logf("%d records: %d live events, %d history ids (%d redone after SIGTERM at %d rows)", len(recs), len(live), len(history), redone, stoppedAt)

	// 4. Refused by the broker: the refusal is fatal for the idempotent producer and
	// names only a batch; republish isolates and names the row.
	refusePoison(e, false)
	code, out = e.runArgs(60*time.Second, e.republishArgs(filepath.Join(e.dir, "poison.state"), "--where", "aggregatetype = 'poison'"))
	if code != 1 || !strings.Contains(out, "id="+poison) || !strings.Contains(out, "one event per request") {
		t.Errorf("a row the broker refuses: exit %d, want 1 naming id=%s after isolating\n%s", code, poison, tail(out, 15))
	}
}

// runArgs runs pgoutbox with args to completion.
func (e *env) runArgs(timeout time.Duration, args []string) (int, string) {
	e.t.Helper()
	p := e.startArgs(nil, args)
	return p.wait(timeout), p.out.String()
}
