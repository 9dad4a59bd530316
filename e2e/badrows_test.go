package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// The bad-row tests commit a row Kafka cannot take between good rows, and check both
// error policies: --on-error=fail stops with nothing confirmed past the row, and a
// restart meets it again; --on-error=dead-letter writes it to the dead-letter topic
// and publishes the rows after it in order.

// outboxRow is one row a bad-row test inserts; a nil ID inserts NULL.
type outboxRow struct {
	ID      *string
	Type    string
	Key     string
	Payload string
}

func goodRow(i int, key string, seq int) outboxRow {
	id := uuidFor(i)
	return outboxRow{ID: &id, Type: "order", Key: key, Payload: fmt.Sprintf(`{"seq": %d}`, seq)}
}

// insertRows commits rows in one transaction. It returns the WAL insert position
// read in the transaction just before COMMIT: the commit record starts after it.
func (e *env) insertRows(rows ...outboxRow) (beforeCommit string) {
	e.t.Helper()
	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, r := range rows {
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, 'Test', $4)`,
			r.ID, r.Type, r.Key, r.Payload); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&beforeCommit); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
	return beforeCommit
}

// consumeAs reads the topics matching regex from the start with a client of its own,
// configured by opts (e.g. SASL), until until reports true or timeout passes.
func consumeAs(t *testing.T, brokers, regex string, opts []kgo.Opt, timeout time.Duration, until func([]kafkatest.Record) bool) []kafkatest.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumeTopics(regex),
		kgo.ConsumeRegex(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var all []kafkatest.Record
	for !until(all) && ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		fetches.EachRecord(func(r *kgo.Record) {
			rec := kafkatest.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
				Timestamp: r.Timestamp, ValueIsNull: r.Value == nil, Headers: map[string][]byte{}}
			for _, h := range r.Headers {
				rec.Headers[h.Key] = h.Value
			}
			all = append(all, rec)
		})
		for _, fe := range fetches.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
				t.Logf("consume %s[%d]: %v", fe.Topic, fe.Partition, fe.Err)
			}
		}
	}
	return all
}

// hasIDs returns an until function for consumeAs that holds once every id arrived.
func hasIDs(ids ...string) func([]kafkatest.Record) bool {
	return func(recs []kafkatest.Record) bool {
		seen := map[string]bool{}
		for _, r := range recs {
			seen[string(r.Headers["id"])] = true
		}
		for _, id := range ids {
			if !seen[id] {
				return false
			}
		}
		return true
	}
}

// badRowCase is one kind of row Kafka cannot take.
type badRowCase struct {
	name  string
	kafka kafkatest.Options
	flags []string  // pgoutbox's flags
	kgo   []kgo.Opt // the test consumer's client options
	// prepare runs before pgoutbox starts.
	prepare func(e *env)
	// bad is the bad row; its ID (unless NULL) and key are set by the test.
	bad outboxRow
	// topic is the topic the row maps to, which the error must name; words must be
	// in the reason.
	topic string
	words []string
	// real runs the case against the package's real Kafka broker (topics under
	// the test's prefix, auto-creation off); topic is then named as on kfake and
	// the test maps it.
	real bool
}

// newEnv makes the case's env; on the real broker it maps the case's topic to the
// test's own name.
func (c *badRowCase) newEnv(t *testing.T) *env {
	e := newEnv(t, envOptions{kafka: c.kafka, realKafka: c.real})
	c.topic = e.eventTopic(strings.TrimPrefix(c.topic, "outbox.event."))
	return e
}

const (
	badKey   = "k1"
	badIndex = 100 // uuidFor(badIndex) is the bad row's id
)

// badRowCases are the kinds of bad rows; exactlyOnce grants the ACLs that mode needs.
func badRowCases(exactlyOnce bool) []badRowCase {
	big := `{"pad": "` + strings.Repeat("x", 50000) + `"}`
	long := strings.Repeat("x", 300)
	// Authorization: the producer may write to the events and dead-letter topics
	// only; the superuser consumes.
	allow := func(topic string) kfake.ACL {
		return kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: topic, Pattern: kmsg.ACLResourcePatternTypeLiteral,
			Operation: kmsg.ACLOperationWrite, Allow: true}
	}
	acls := []kfake.ACL{allow("outbox.event.order"), allow("outbox.dead-letter")}
	if exactlyOnce {
		acls = append(acls,
			kfake.ACL{Resource: kmsg.ACLResourceTypeTransactionalId, Name: "pgoutbox-", Pattern: kmsg.ACLResourcePatternTypePrefixed,
				Operation: kmsg.ACLOperationAll, Allow: true},
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "pgoutbox.checkpoints", Pattern: kmsg.ACLResourcePatternTypeLiteral,
				Operation: kmsg.ACLOperationAll, Allow: true})
	}
	sasl := []string{"--kafka-config", "security.protocol=SASL_PLAINTEXT", "--kafka-config", "sasl.mechanism=PLAIN",
		"--kafka-config", "sasl.username=producer", "--kafka-config", "sasl.password=producer-pw"}
	return []badRowCase{
		{name: "too large", flags: []string{"--kafka-config", "message.max.bytes=10000"},
			bad: outboxRow{Type: "order", Payload: big}, topic: "outbox.event.order", words: []string{"too large"}},
		{name: "slash in topic", bad: outboxRow{Type: "bad/type", Payload: `{"seq": 0}`},
			topic: "outbox.event.bad/type", words: []string{"'/'"}},
		{name: "topic too long", bad: outboxRow{Type: long, Payload: `{"seq": 0}`},
			topic: "outbox.event." + long, words: []string{"249"}},
		{name: "missing topic",
			kafka: kafkatest.Options{SeedTopics: map[string]int32{"outbox.event.order": 3, "outbox.dead-letter": 1}},
			flags: []string{"--kafka-config", "topic.metadata.propagation.max.ms=2000"},
			bad:   outboxRow{Type: "missing", Payload: `{"seq": 0}`}, topic: "outbox.event.missing", words: []string{"unknown topic"}},
		{name: "not authorized",
			kafka: kafkatest.Options{
				SeedTopics: map[string]int32{"outbox.event.order": 3, "outbox.event.secret": 3, "outbox.dead-letter": 1},
				Extra: []kfake.Opt{kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin-pw"),
					kfake.User("PLAIN", "producer", "producer-pw", acls...)},
			},
			flags: sasl,
			kgo:   []kgo.Opt{kgo.SASL(plain.Auth{User: "admin", Pass: "admin-pw"}.AsMechanism())},
			bad:   outboxRow{Type: "secret", Payload: `{"seq": 0}`}, topic: "outbox.event.secret", words: []string{"authorization"}},
		{name: "NULL id",
			prepare: func(e *env) {
				e.exec(`ALTER TABLE outbox DROP CONSTRAINT outbox_pkey, ALTER COLUMN id DROP NOT NULL`)
			},
			bad: outboxRow{Type: "order", Payload: `{"seq": 0}`}, topic: "outbox.event.order", words: []string{"NULL"}},
	}
}

// nullID reports whether the case inserts its bad row with a NULL id.
func (c badRowCase) nullID() bool { return c.name == "NULL id" }

// insertAround commits the rows of every bad-row test: a transaction of good rows,
// then the bad row between good rows of its key, then more good rows. It returns a
// WAL position before the commit record of the bad row's transaction.
//
// That, and not the position before the transaction's first record, is the bound
// for the slot: PostgreSQL skips on restart only transactions whose commit record
// starts before the confirmed position, and the walsender's keepalives report WAL
// flushed while the transaction is still being written, which an idle pgoutbox
// rightly confirms. pendingChanges then proves the transaction is still sent.
//
// When first is set, insertAround waits for the slot to confirm the first
// transaction before it inserts the bad row.
func (c badRowCase) insertAround(e *env, first bool) (bound string) {
	e.t.Helper()
	firstEnd := e.insertRows(goodRow(1, "k1", 1), goodRow(2, "k2", 1))
	if first {
		waitFor(e.t, 30*time.Second, "the first transaction to be confirmed", func() bool {
			confirmed, _ := e.slotConfirmed()
			return confirmed != "" && !e.lsnLE(confirmed, firstEnd)
		})
	}
	bad := c.bad
	bad.Key = badKey
	if !c.nullID() {
		id := uuidFor(badIndex)
		bad.ID = &id
	}
	bound = e.insertRows(goodRow(3, "k1", 2), bad, goodRow(4, "k1", 3))
	e.insertRows(goodRow(5, "k1", 4), goodRow(6, "k2", 2))
	return bound
}

// afterBad counts the inserts from the bad row's transaction on.
const afterBad = 5

// checkFailLine checks the error pgoutbox stopped with names the row, its topic and
// the reason.
func (c badRowCase) checkFailLine(t *testing.T, line string) {
	t.Helper()
	if c.nullID() {
		mentions(t, line, "id column", "NULL")
	} else {
		mentions(t, line, uuidFor(badIndex))
	}
	mentions(t, line, c.words...)
	mentions(t, line, "--on-error")
	// A very long name may be shortened, but must be recognizable.
	if topic := c.topic; !strings.Contains(line, topic) && !strings.Contains(line, topic[:min(len(topic), 60)]) {
		t.Errorf("error does not name topic %q: %s", topic[:min(len(topic), 60)], line)
	}
}

// TestBadRowFail: with --on-error=fail (the default) pgoutbox stops at a row Kafka
// cannot take, exit code 1, having published and confirmed everything before it and
// confirmed nothing after it; a restart meets the same row again.
func TestBadRowFail(t *testing.T) {
	for _, c := range badRowCases(false) {
		t.Run(c.name, func(t *testing.T) { testBadRowFail(t, c) })
	}
}

func testBadRowFail(t *testing.T, c badRowCase) {
	e := c.newEnv(t)
	if c.prepare != nil {
		c.prepare(e)
	}
	// A pgoutbox that waits for an ack that cannot come would sit out the
	// shutdown timeout; make that long enough to show as a hang.
	flags := append([]string{"--shutdown-timeout", "5m"}, c.flags...)
	p := e.start(flags...)
	p.waitLog(`"streaming"`, 30*time.Second)
	bound := c.insertAround(e, true)
	start := time.Now()
	code := p.wait(30 * time.Second)
	out := p.out.String()
	if code != 1 {
		t.Fatalf("exit code %d, want 1; output:\n%s", code, tail(out, 30))
	}
	t.Logf("exited %s after the rows were committed", time.Since(start).Round(time.Millisecond))
	e.waitInactive(10 * time.Second)
	line := errorLine(t, out)
	t.Logf("%s", line)
	c.checkFailLine(t, line)
	recs := consumeAs(t, e.brokers, e.topicRegex(), c.kgo, 30*time.Second, hasIDs(uuidFor(1), uuidFor(2)))
	if !hasIDs(uuidFor(1), uuidFor(2))(recs) {
		t.Errorf("the events committed before the bad row were not published")
	}
	e.notConfirmedPast(bound)
	if n := e.pendingChanges(); n != afterBad {
		t.Errorf("slot would send %d inserts, want the %d from the bad row's transaction on", n, afterBad)
	}

	// A restart meets the same row.
	code, out = e.run(60*time.Second, flags...)
	if code != 1 {
		t.Fatalf("restart: exit code %d, want 1; output:\n%s", code, tail(out, 30))
	}
	e.waitInactive(10 * time.Second)
	if again := errorLine(t, out); again != line {
		t.Errorf("restart stopped with another error:\nfirst:  %s\nrestart: %s", line, again)
	}
	if n := e.pendingChanges(); n != afterBad {
		t.Errorf("after the restart the slot would send %d inserts, want %d", n, afterBad)
	}
}

// deadLetterValue is the JSON value of a dead-letter record.
type deadLetterValue struct {
	ID              string  `json:"id"`
	Topic           string  `json:"topic"`
	Key             *string `json:"key"`
	Error           string  `json:"error"`
	Payload         *string `json:"payload"`
	PayloadEncoding string  `json:"payload_encoding"`
	PayloadSize     *int    `json:"payload_size"`
	PayloadPrefix   string  `json:"payload_prefix"`
	CommitLSN       string  `json:"commit_lsn"`
}

// TestDeadLetter: with --on-error=dead-letter pgoutbox keeps running, writes the bad
// row to the dead-letter topic with what is needed to republish it, publishes the
// rows after it in per-key order, and confirms everything.
// With --exactly-once the same holds for a read_committed consumer.
func TestDeadLetter(t *testing.T) {
	for _, c := range badRowCases(false) {
		t.Run(c.name, func(t *testing.T) { testDeadLetter(t, c, false) })
	}
	for _, c := range badRowCases(true) {
		t.Run("exactly-once/"+c.name, func(t *testing.T) { testDeadLetter(t, c, true) })
	}
}

func testDeadLetter(t *testing.T, c badRowCase, exactlyOnce bool) {
	e := c.newEnv(t)
	if c.prepare != nil {
		c.prepare(e)
	}
	flags := append([]string{"--on-error", "dead-letter", "--metrics-addr", "127.0.0.1:0"}, c.flags...)
	if exactlyOnce {
		flags = append(flags, "--exactly-once")
		c.kgo = append(c.kgo, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	p := e.start(flags...)
	p.waitLog(`"streaming"`, 30*time.Second)
	c.insertAround(e, false)
	var good []string
	for i := 1; i <= 6; i++ {
		good = append(good, uuidFor(i))
	}
	recs := consumeAs(t, e.brokers, e.topicRegex(), c.kgo, 60*time.Second, hasIDs(good...))
	if !hasIDs(good...)(recs) {
		t.Fatalf("the good rows around the dead-lettered one were not all published:\n%s", tail(p.out.String(), 30))
	}
	// Per-key order of the other rows holds across the dead-lettered one.
	seqs := map[string][]int{}
	for _, r := range recs {
		if id := string(r.Headers["id"]); id == uuidFor(badIndex) || r.Topic != e.eventTopic("order") {
			t.Errorf("unexpected record on %s with id %q", r.Topic, id)
			continue
		}
		var v struct{ Seq int }
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Fatalf("value %q: %v", r.Value, err)
		}
		seqs[string(r.Key)] = append(seqs[string(r.Key)], v.Seq)
	}
	if got := fmt.Sprint(seqs["k1"], seqs["k2"]); got != "[1 2 3 4] [1 2]" {
		t.Errorf("per-key order: k1 then k2 carried seq %s, want [1 2 3 4] [1 2]", got)
	}

	dl := consumeAs(t, e.brokers, "^"+regexp.QuoteMeta(e.deadLetterTopic())+"$", c.kgo, 30*time.Second,
		func(r []kafkatest.Record) bool { return len(r) > 0 })
	if len(dl) != 1 {
		t.Fatalf("%d dead-letter records, want 1:\n%s", len(dl), tail(p.out.String(), 30))
	}
	c.checkDeadLetter(t, dl[0])

	p.waitLog("event sent to the dead-letter topic", 10*time.Second)
	if got := scrapeMetric(t, metricsAddr(t, p), "pgoutbox_dead_lettered_total"); got != "1" {
		t.Errorf("pgoutbox_dead_lettered_total = %q, want 1", got)
	}
	e.stopClean(p)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}

// checkDeadLetter checks the dead-letter record of the case's bad row.
func (c badRowCase) checkDeadLetter(t *testing.T, r kafkatest.Record) {
	t.Helper()
	t.Logf("dead-letter record: %s", truncateForLog(string(r.Value), 600))
	var v deadLetterValue
	if err := json.Unmarshal(r.Value, &v); err != nil {
		t.Fatalf("dead-letter value is not JSON: %v: %q", err, r.Value)
	}
	wantID := uuidFor(badIndex)
	if c.nullID() {
		wantID = ""
	}
	if v.ID != wantID || string(r.Headers["id"]) != wantID {
		t.Errorf("dead-letter id %q, header id %q, want %q", v.ID, r.Headers["id"], wantID)
	}
	if v.Topic != c.topic {
		t.Errorf("dead-letter topic %q, want the row's topic %q", v.Topic, c.topic)
	}
	if v.Key == nil || *v.Key != badKey || string(r.Key) != badKey {
		t.Errorf("dead-letter key %v, record key %q, want %q", v.Key, r.Key, badKey)
	}
	mentions(t, v.Error, c.words...)
	if v.CommitLSN == "" {
		t.Errorf("dead-letter record has no commit_lsn")
	}
	payload := c.bad.Payload
	if v.PayloadSize == nil || *v.PayloadSize != len(payload) {
		t.Errorf("payload_size %v, want %d", v.PayloadSize, len(payload))
	}
	switch {
	case len(payload) > 10000:
		if v.Payload != nil {
			t.Errorf("a %d-byte payload is carried whole in a record that must fit message.max.bytes=10000", len(payload))
		}
		if v.PayloadPrefix == "" || !strings.HasPrefix(payload, v.PayloadPrefix) {
			t.Errorf("payload_prefix %q is not a prefix of the payload", truncateForLog(v.PayloadPrefix, 80))
		}
	default:
		if v.Payload == nil || *v.Payload != payload || v.PayloadEncoding != "text" {
			t.Errorf("dead-letter payload %v (%s), want %q as text", v.Payload, v.PayloadEncoding, payload)
		}
	}
}

func truncateForLog(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("…(%d bytes)", len(s))
}

// TestDeadLetterRefused: when the dead-letter topic refuses the record too (it does
// not exist and cannot be created), pgoutbox behaves as with --on-error=fail.
func TestDeadLetterRefused(t *testing.T) {
	c := badRowCase{name: "missing topic, missing dead-letter topic",
		kafka: kafkatest.Options{SeedTopics: map[string]int32{"outbox.event.order": 3}},
		flags: []string{"--on-error", "dead-letter", "--kafka-config", "topic.metadata.propagation.max.ms=2000"},
		bad:   outboxRow{Type: "missing", Payload: `{"seq": 0}`}, topic: "outbox.event.missing"}
	e := newEnv(t, envOptions{kafka: c.kafka})
	p := e.start(c.flags...)
	p.waitLog(`"streaming"`, 30*time.Second)
	bound := c.insertAround(e, true)
	code := p.wait(60 * time.Second)
	out := p.out.String()
	if code != 1 {
		t.Fatalf("exit code %d, want 1; output:\n%s", code, tail(out, 30))
	}
	line := errorLine(t, out)
	t.Logf("%s", line)
	mentions(t, line, "dead-letter", "outbox.dead-letter", uuidFor(badIndex))
	e.waitInactive(10 * time.Second)
	if strings.Contains(out, "event sent to the dead-letter topic") {
		t.Errorf("pgoutbox logged a dead-letter send that Kafka refused")
	}
	e.notConfirmedPast(bound)
	if n := e.pendingChanges(); n != afterBad {
		t.Errorf("slot would send %d inserts, want the %d from the bad row's transaction on", n, afterBad)
	}
}

// TestBadRowFailEarlierEventsInFlight: the bad row's delivery report comes back
// while events committed before it still wait for their acks (here the broker holds
// the producer id for 3s, so nothing is produced before the missing topic's metadata
// times out). With --on-error=fail pgoutbox must still publish and confirm those
// earlier events before it stops: the restart should begin at the bad row.
func TestBadRowFailEarlierEventsInFlight(t *testing.T) {
	c := badRowCase{name: "missing topic",
		kafka: kafkatest.Options{SeedTopics: map[string]int32{"outbox.event.order": 3}},
		flags: []string{"--kafka-config", "topic.metadata.propagation.max.ms=500", "--shutdown-timeout", "5m"},
		bad:   outboxRow{Type: "missing", Payload: `{"seq": 0}`}, topic: "outbox.event.missing", words: []string{"unknown topic"}}
	e := newEnv(t, envOptions{kafka: c.kafka})
	var held atomic.Int64
	e.kafka.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		if held.Add(1) == 1 {
			e.kafka.SleepControl(func() { time.Sleep(3 * time.Second) })
		}
		return nil, nil, false
	})
	p := e.start(c.flags...)
	p.waitLog(`"streaming"`, 30*time.Second)
	bound := c.insertAround(e, false)
	code := p.wait(60 * time.Second)
	out := p.out.String()
	if code != 1 {
		t.Fatalf("exit code %d, want 1; output:\n%s", code, tail(out, 30))
	}
	line := errorLine(t, out)
	t.Logf("%s", line)
	c.checkFailLine(t, line)
	e.waitInactive(10 * time.Second)
	e.notConfirmedPast(bound)
	recs := consumeAs(t, e.brokers, `^outbox\.event\.`, nil, 10*time.Second, hasIDs(uuidFor(1), uuidFor(2)))
	if !hasIDs(uuidFor(1), uuidFor(2))(recs) {
		var ids []string
		for _, r := range recs {
			ids = append(ids, string(r.Headers["id"]))
		}
		t.Errorf("the events committed before the bad row were not published; Kafka has %q", ids)
	}
	if n := e.pendingChanges(); n != afterBad {
		t.Errorf("slot would send %d inserts, want the %d from the bad row's transaction on: the transaction before it was not confirmed", n, afterBad)
	}
}
