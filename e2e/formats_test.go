package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// The tests in this file check the bytes of Debezium's converters end to end: what an
// independent franz-go consumer reads must be what Kafka Connect's JsonConverter writes
// for Debezium's schema of sql/outbox.sql (id uuid PRIMARY KEY, aggregateid text NOT NULL,
// payload jsonb nullable). The expected bytes are written out by hand; outbox's golden
// tests cite the sources they follow.

// byID indexes records by their "id" header as the raw text of the event id: with a
// JSON header format the header is that text as a JSON string.
func byID(t *testing.T, recs []kafkatest.Record, jsonHeader bool) map[string]kafkatest.Record {
	t.Helper()
	m := map[string]kafkatest.Record{}
	for _, r := range recs {
		id := string(r.Headers["id"])
		if jsonHeader {
			var s string
			if err := json.Unmarshal(r.Headers["id"], &s); err != nil {
				t.Fatalf("id header %q is not a JSON string: %v", r.Headers["id"], err)
			}
			id = s
		}
		m[id] = r
	}
	return m
}

func stop(t *testing.T, p *proc) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

// TestFormatJSON: --key-format/--value-format/--header-format json write what
// JsonConverter with schemas.enable=false writes: the text key and payload as JSON
// strings, a NULL payload as the JSON null, the id as a JSON string.
func TestFormatJSON(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start("--key-format", "json", "--value-format", "json", "--header-format", "json")
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES
		($1, 'order', '1', 'Created', '{"id": 1}'), ($2, 'order', 'say "hi"', 'Created', NULL)`, uuidFor(1), uuidFor(2))
	recs := byID(t, e.consumeN(2, 30*time.Second), true)
	r := recs[uuidFor(1)]
	checkRecord(t, "row 1", r, `"1"`, `"{\"id\": 1}"`)
	if got := string(r.Headers["id"]); got != `"`+uuidFor(1)+`"` {
		t.Errorf("id header %s", got)
	}
	checkRecord(t, "row 2", recs[uuidFor(2)], `"say \"hi\""`, `null`)
	stop(t, p)
}

func checkRecord(t *testing.T, what string, r kafkatest.Record, key, value string) {
	t.Helper()
	if string(r.Key) != key {
		t.Errorf("%s: key %s, want %s", what, r.Key, key)
	}
	if r.ValueIsNull || string(r.Value) != value {
		t.Errorf("%s: value %s (null %v), want %s", what, r.Value, r.ValueIsNull, value)
	}
}

// TestFormatJSONEnvelope: json-envelope is JsonConverter with schemas.enable=true:
// "optional" comes from the column's NOT NULL, which only the catalog knows — the relay
// must pass it to the mapper (Mapper.SetColumns) for these bytes.
func TestFormatJSONEnvelope(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start("--key-format", "json-envelope", "--value-format", "json-envelope", "--header-format", "json-envelope")
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'order', '1', 'Created', '{"id": 1}')`, uuidFor(1))
	recs := e.consumeN(1, 30*time.Second)
	r := recs[0]
	checkRecord(t, "row", r, `{"schema":{"type":"string","optional":false},"payload":"1"}`,
		`{"schema":{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1},"payload":"{\"id\": 1}"}`)
	if got, want := string(r.Headers["id"]), `{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"`+uuidFor(1)+`"}`; got != want {
		t.Errorf("id header\n got %s\nwant %s", got, want)
	}
	stop(t, p)
}

// TestJSONKeyPartition: a Java producer partitions by murmur2 of the serialized key, so
// with JsonConverter the key "agg-1" (quotes included) decides the partition. On
// kfake's 10 partitions each record must sit where franz-go's Java-compatible
// partitioner puts those bytes — and for some keys that is not where the raw key
// would go, so the test would notice a relay that hashed the text.
func TestJSONKeyPartition(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start("--key-format", "json")
	p.waitLog(`"streaming"`, 30*time.Second)
	var evs []event
	for i := 0; i < 40; i++ {
		evs = append(evs, event{ID: uuidFor(i), Type: "order", AggID: fmt.Sprintf("agg-%d", i), Kind: "Created", Payload: `{}`})
	}
	e.insertTx(evs...)
	recs := e.consumeN(len(evs), 30*time.Second)
	java := kgo.StickyKeyPartitioner(nil).ForTopic("outbox.event.order")
	moved := 0
	for _, r := range recs {
		var text string
		if err := json.Unmarshal(r.Key, &text); err != nil {
			t.Fatalf("key %q is not a JSON string: %v", r.Key, err)
		}
		if want := java.Partition(&kgo.Record{Key: r.Key}, 10); int(r.Partition) != want {
			t.Errorf("key %s: partition %d, a Java producer uses %d", r.Key, r.Partition, want)
		}
		if java.Partition(&kgo.Record{Key: []byte(text)}, 10) != int(r.Partition) {
			moved++
		}
	}
	if moved == 0 {
		t.Error("no key's JSON form hashes to another partition than its text; the test proves nothing")
	}
	stop(t, p)
}

// TestEventRouterOptions: additional fields in a header and in the envelope, a tombstone
// for a NULL payload, and regex routing, through the binary.
func TestEventRouterOptions(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start("--value-format", "json", "--additional-field", "type:header:eventType,type:envelope:eventType",
		"--tombstone-on-empty-payload", "--route-topic-regex", "(?<kind>[a-z]+)", "--route-topic-replacement", "outbox.event.${kind}.v1")
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES
		($1, 'order', '1', 'Created', '{"id": 1}'), ($2, 'order', '1', 'Deleted', NULL), ($3, 'Odd', '2', 'Created', '{}')`, uuidFor(1), uuidFor(2), uuidFor(3))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all, err := kafkatest.Consume(ctx, e.brokers, kafkatest.ConsumeOptions{TopicRegex: `^(outbox\.event\.|Odd$)`,
		Until: func(r []kafkatest.Record) bool { return len(r) >= 3 }})
	if err != nil || len(all) < 3 {
		t.Fatalf("consume: %v (%d records, want 3)", err, len(all))
	}
	recs := byID(t, all, false)
	r := recs[uuidFor(1)]
	if r.Topic != "outbox.event.order.v1" || string(r.Headers["eventType"]) != "Created" {
		t.Errorf("row 1: topic %q eventType %q", r.Topic, r.Headers["eventType"])
	}
	checkRecord(t, "row 1", r, `1`, `{"payload":"{\"id\": 1}","eventType":"Created"}`)
	if r := recs[uuidFor(2)]; !r.ValueIsNull {
		t.Errorf("NULL payload with --tombstone-on-empty-payload: value %q, want a tombstone", r.Value)
	}
	// "Odd" does not match [a-z]+ whole: RegexRouter leaves the topic as the value.
	if r := recs[uuidFor(3)]; r.Topic != "Odd" {
		t.Errorf("unmatched route value: topic %q, want Odd", r.Topic)
	}
	stop(t, p)
}

// TestPartitionAndTimestampFields: a partition field chooses the partition and
// --timestamp-column the record timestamp. The relay must produce Record.Partition and
// Record.Timestamp for these to hold.
func TestPartitionAndTimestampFields(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.exec(`ALTER TABLE outbox ADD COLUMN part integer, ADD COLUMN created timestamp`)
	p := e.start("--additional-field", "part:partition", "--timestamp-column", "created")
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, part, created) VALUES
		($1, 'order', '1', 'Created', '{}', 7, '2019-01-31 12:13:01.123456'), ($2, 'order', '1', 'Created', '{}', NULL, NULL)`, uuidFor(1), uuidFor(2))
	before := time.Now().Add(-time.Minute)
	recs := byID(t, e.consumeN(2, 30*time.Second), false)
	r := recs[uuidFor(1)]
	if r.Partition != 7 {
		t.Errorf("part = 7: partition %d", r.Partition)
	}
	if want := time.Date(2019, 1, 31, 12, 13, 1, 123_000_000, time.UTC); !r.Timestamp.Equal(want) {
		t.Errorf("created: timestamp %v, want %v", r.Timestamp, want)
	}
	r = recs[uuidFor(2)]
	if want := kgo.StickyKeyPartitioner(nil).ForTopic(r.Topic).Partition(&kgo.Record{Key: r.Key}, 10); int(r.Partition) != want {
		t.Errorf("NULL part: partition %d, the key's is %d", r.Partition, want)
	}
	if r.Timestamp.Before(before) {
		t.Errorf("NULL created: timestamp %v, want the commit time", r.Timestamp)
	}
	stop(t, p)
}

// TestSeveralOutboxTables: two outbox tables of one layout in one publication, each
// row routed by its own aggregatetype. The relay must set up and check every table.
func TestSeveralOutboxTables(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.exec(`CREATE SCHEMA billing`)
	e.exec(`CREATE TABLE billing.outbox (LIKE public.outbox INCLUDING ALL)`)
	e.exec(`ALTER PUBLICATION pgoutbox ADD TABLE billing.outbox`)
	e.exec(`GRANT USAGE ON SCHEMA billing TO pgoutbox`)
	e.exec(`GRANT SELECT ON billing.outbox TO pgoutbox`)
	p := e.start("--table", "public.outbox", "--table", "billing.outbox")
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`INSERT INTO public.outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'order', '1', 'Created', '{}')`, uuidFor(1))
	e.exec(`INSERT INTO billing.outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'invoice', '2', 'Created', '{}')`, uuidFor(2))
	recs := byID(t, e.consumeN(2, 30*time.Second), false)
	if recs[uuidFor(1)].Topic != "outbox.event.order" || recs[uuidFor(2)].Topic != "outbox.event.invoice" {
		t.Errorf("topics %q and %q", recs[uuidFor(1)].Topic, recs[uuidFor(2)].Topic)
	}
	stop(t, p)
}

// TestDebeziumConfigFile: pgoutbox configured only by a Debezium connector configuration
// in the outbox example's shape (JsonConverter without schemas, an eventType header,
// routing to "<aggregatetype>.events") publishes what that connector publishes, and logs
// the options it accepted without effect.
func TestDebeziumConfigFile(t *testing.T) {
	e := newEnv(t, envOptions{})
	u, err := url.Parse(e.url())
	if err != nil {
		t.Fatal(err)
	}
	port := u.Port()
	cfg := map[string]any{"name": "outbox-connector", "config": map[string]string{
		"connector.class":                           "io.debezium.connector.postgresql.PostgresConnector",
		"tasks.max":                                 "1",
		"plugin.name":                               "pgoutput",
		"database.hostname":                         "127.0.0.1",
		"database.port":                             port,
		"database.user":                             role,
		"database.password":                         "unused-with-trust",
		"database.dbname":                           e.db,
		"database.sslmode":                          "disable",
		"topic.prefix":                              "dbserver1",
		"slot.name":                                 e.slot,
		"publication.name":                          "pgoutbox",
		"table.include.list":                        "public.outbox",
		"tombstones.on.delete":                      "false",
		"key.converter":                             "org.apache.kafka.connect.json.JsonConverter",
		"key.converter.schemas.enable":              "false",
		"value.converter":                           "org.apache.kafka.connect.json.JsonConverter",
		"value.converter.schemas.enable":            "false",
		"transforms":                                "outbox",
		"transforms.outbox.type":                    "io.debezium.transforms.outbox.EventRouter",
		"transforms.outbox.route.topic.replacement": "${routedByValue}.events",
		"transforms.outbox.table.fields.additional.placement": "type:header:eventType",
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, "connector.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p := e.startArgs(nil, []string{"--kafka-brokers", e.brokers, "--checkpoint-file", filepath.Join(e.dir, "checkpoint"),
		"--status-interval", "200ms", "--log-level", "debug", "--debezium-config", path})
	p.waitLog(`"streaming"`, 30*time.Second)
	e.exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, 'order', '1', 'OrderCreated', '{"id": 1}')`, uuidFor(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := kafkatest.Consume(ctx, e.brokers, kafkatest.ConsumeOptions{Topics: []string{"order.events"},
		Until: func(r []kafkatest.Record) bool { return len(r) >= 1 }})
	if err != nil || len(recs) == 0 {
		t.Fatalf("consume order.events: %v (%d records)", err, len(recs))
	}
	r := recs[0]
	checkRecord(t, "record", r, `"1"`, `"{\"id\": 1}"`)
	if string(r.Headers["id"]) != uuidFor(1) || string(r.Headers["eventType"]) != "OrderCreated" {
		t.Errorf("headers id=%q eventType=%q", r.Headers["id"], r.Headers["eventType"])
	}
	p.waitLog(`"option":"tasks.max"`, 5*time.Second)
	stop(t, p)
}
