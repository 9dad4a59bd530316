package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

func validConfig() Config {
	return Config{
		PostgresURL: "postgres://u@h/db", Slot: "pgoutbox", Publication: "pgoutbox",
		Mapping: outbox.DefaultConfig(), Kafka: sink.Config{Brokers: "k:9092"},
		CheckpointStore: StoreFile, CheckpointFile: "cp", MaxInFlight: 10, StatusInterval: time.Second,
		OnError: OnErrorFail, DeadLetterTopic: "outbox.dead-letter",
		CheckpointTopic: "pgoutbox.checkpoints", TxnInterval: time.Millisecond, TxnMaxEvents: 5,
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*Config)
		want   string // "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no url", func(c *Config) { c.PostgresURL = "" }, "--postgres-url"},
		{"no brokers", func(c *Config) { c.Kafka.Brokers = "" }, "--kafka-brokers"},
		{"slot with upper case", func(c *Config) { c.Slot = "Outbox" }, "lower case"},
		{"slot too long", func(c *Config) { c.Slot = strings.Repeat("s", 64) }, "1 to 63"},
		{"bad store", func(c *Config) { c.CheckpointStore = "s3" }, "--checkpoint-store"},
		{"postgres store", func(c *Config) { c.CheckpointStore = StorePostgres; c.CheckpointTable = "public.cp" }, ""},
		{"bad policy", func(c *Config) { c.OnError = "ignore" }, "--on-error"},
		{"bad dead-letter topic", func(c *Config) { c.OnError = OnErrorDeadLetter; c.DeadLetterTopic = "a/b" }, "--dead-letter-topic"},
		{"weakened acks", func(c *Config) { c.Kafka.Properties = map[string]string{"acks": "1"} }, "acks=1"},
		{"no table without messages", func(c *Config) { c.Mapping.Tables = nil }, "--table"},
		{"tableless", func(c *Config) { c.Mapping.Tables = nil; c.MessagesPrefix = "outbox" }, ""},
		{"backfill with exactly-once", func(c *Config) { c.Backfill = true; c.ExactlyOnce = true }, ""},
		{"exactly-once bad topic", func(c *Config) { c.ExactlyOnce = true; c.CheckpointTopic = "" }, "--checkpoint-topic"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			c.change(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func TestTxnID(t *testing.T) {
	c := validConfig()
	if got := c.TxnID(); got != "pgoutbox-pgoutbox" {
		t.Errorf("TxnID %q", got)
	}
	c.TransactionalID = "custom"
	if got := c.TxnID(); got != "custom" {
		t.Errorf("TxnID %q", got)
	}
}

func TestJitterStaysWithin20Percent(t *testing.T) {
	for i := 0; i < 1000; i++ {
		d := jitter(time.Second)
		if d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("jitter(1s) = %s", d)
		}
	}
}

// TestSkipRule: on replay, whole transactions the checkpoint record covers are
// skipped, and of the transaction it covers in part exactly the events it names.
func TestSkipRule(t *testing.T) {
	rule := skipRule{Before: 1000, Final: 2000, Events: 2}
	for i := 1; i <= 3; i++ {
		if !rule.covers(900, i) { // committed before the record's LSN: all in Kafka
			t.Fatalf("event %d of a covered transaction not skipped", i)
		}
	}
	got := []bool{rule.covers(2000, 1), rule.covers(2000, 2), rule.covers(2000, 3), rule.covers(2000, 4)}
	if want := []bool{true, true, false, false}; !equalBools(got, want) {
		t.Fatalf("split transaction skips %v, want %v", got, want)
	}
	if rule.covers(3000, 1) {
		t.Fatal("an event after the checkpoint was skipped")
	}
	if (skipRule{}).covers(1, 1) {
		t.Fatal("no record skips something")
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDeadLetterRecord: the record carries what a person needs to find and
// republish the row, and a payload too large to fit is cut to a prefix.
func TestDeadLetterRecord(t *testing.T) {
	max := deadLetterMax(nil)
	committed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	row := &outbox.RowError{ID: "e1", Topic: "outbox.event.order", Reason: "too large", Key: []byte("k"), Payload: []byte(`{"a":1}`)}
	m := deadLetter(row, "dlq", max, 0x16B3748, committed)
	if m.Topic != "dlq" || string(m.Key) != "k" || string(m.ID) != "e1" || m.Token != 0x16B3748 || !m.DeadLetter || m.Partitioned {
		t.Fatalf("message %+v", m)
	}
	headers := map[string]string{}
	for _, h := range m.Headers {
		headers[h.Key] = string(h.Value)
	}
	if headers["id"] != "e1" || headers["pgoutbox.topic"] != "outbox.event.order" || headers["pgoutbox.error"] != "too large" {
		t.Errorf("headers %v", headers)
	}
	var rec map[string]any
	if err := json.Unmarshal(m.Value, &rec); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"id": "e1", "topic": "outbox.event.order", "key": "k", "error": "too large",
		"payload": `{"a":1}`, "payload_encoding": "text", "payload_size": 7.0, "commit_lsn": "0/16B3748", "commit_time": "2026-01-02T03:04:05Z"} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %v", k, rec[k], want)
		}
	}

	big := &outbox.RowError{ID: "e2", Payload: []byte(strings.Repeat("é", 400000))}
	rec = nil
	json.Unmarshal(deadLetter(big, "dlq", max, 1, time.Time{}).Value, &rec)
	if _, ok := rec["payload"]; ok {
		t.Errorf("an 800 KB payload was carried whole")
	}
	if p, _ := rec["payload_prefix"].(string); len(p) == 0 || len(p) > deadLetterPrefix || !strings.HasPrefix(string(big.Payload), p) {
		t.Errorf("payload_prefix of %d bytes", len(p))
	}
	if rec["key"] != nil {
		t.Errorf("NULL key became %v", rec["key"])
	}

	binary := &outbox.RowError{ID: "e3", Payload: []byte{0xff, 0x00, 0x01}}
	rec = nil
	json.Unmarshal(deadLetter(binary, "dlq", max, 1, time.Time{}).Value, &rec)
	if rec["payload_encoding"] != "base64" || rec["payload"] != "/wAB" {
		t.Errorf("binary payload: %v %v", rec["payload_encoding"], rec["payload"])
	}
}

// TestStopped: a session that ended because SIGTERM cancelled its connection or
// set-up is a clean stop (exit 0); what the stop itself found wrong is not.
func TestStopped(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool // reported
	}{
		{nil, false},
		{context.Canceled, false},
		{fmt.Errorf("connect: %w", context.Canceled), false},
		{&source.ConnectError{Where: "db:5432", Err: context.Canceled}, false},
		{&stopError{errors.New("3 events still unacknowledged")}, true},
		{permanent(&RowFailedError{Row: &outbox.RowError{ID: "e1"}}), true},
	} {
		if got := stopped(c.err) != nil; got != c.want {
			t.Errorf("stopped(%v) reported %v, want %v", c.err, got, c.want)
		}
	}
}
