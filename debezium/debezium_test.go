package debezium

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// outboxExample is the connector configuration of Debezium's outbox example
// (debezium-examples, outbox/register-postgres.json), the bare config object the
// example PUTs to /connectors/outbox-connector/config. It sets no plugin.name: the
// example's database image has decoderbufs, Debezium's default.
const outboxExample = `{
    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "tasks.max": "1",
    "database.hostname": "order-db",
    "database.port": "5432",
    "database.user": "postgresuser",
    "database.password": "postgrespw",
    "database.dbname" : "orderdb",
    "topic.prefix": "dbserver1",
    "schema.include.list": "inventory",
    "table.include.list" : "inventory.outboxevent",
    "tombstones.on.delete" : "false",
    "transforms" : "outbox",
    "transforms.outbox.type" : "io.debezium.transforms.outbox.EventRouter",
    "transforms.outbox.route.topic.replacement" : "${routedByValue}.events",
    "transforms.outbox.table.fields.additional.placement" : "type:header:eventType"
}`

// withOptions adds lines to outboxExample's object.
func withOptions(extra string) string {
	return strings.Replace(outboxExample, `"tasks.max": "1",`, `"tasks.max": "1",`+extra, 1)
}

func convert(t *testing.T, text string) (*Result, error) {
	t.Helper()
	o, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return Convert(o)
}

func mustConvert(t *testing.T, text string) *Result {
	t.Helper()
	r, err := convert(t, text)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	return r
}

// flags renders the derived flags as "--name=value" (shown values) for comparison.
func flags(r *Result) []string {
	var out []string
	for _, f := range r.Flags {
		if f.Problem != "" {
			out = append(out, "--"+f.Name+"=!"+f.Problem)
			continue
		}
		out = append(out, "--"+f.Name+"="+f.Shown)
	}
	return out
}

func checkFlags(t *testing.T, r *Result, want []string) {
	t.Helper()
	got := flags(r)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("flags:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

func refusedOptions(err error) []string {
	var ref *Refused
	if !errors.As(err, &ref) {
		return nil
	}
	var out []string
	for _, o := range ref.Options {
		out = append(out, o.Option)
	}
	return out
}

// TestOutboxExampleNeedsPgoutput: the example as documented runs on decoderbufs, whose
// slot pgoutbox cannot read; the refusal names plugin.name.
func TestOutboxExampleNeedsPgoutput(t *testing.T) {
	_, err := convert(t, outboxExample)
	if got := refusedOptions(err); len(got) != 1 || got[0] != "plugin.name" {
		t.Fatalf("Convert = %v, want plugin.name refused alone", err)
	}
	if !strings.Contains(err.Error(), "decoderbufs") {
		t.Errorf("error %q does not say why", err)
	}
}

// TestOutboxExampleJSONConverter: the example with pgoutput and the converters its
// Kafka Connect worker sets (docker-compose.yaml: JsonConverter, schemas.enable=false)
// in the connector's config.
func TestOutboxExampleJSONConverter(t *testing.T) {
	r := mustConvert(t, withOptions(`
    "plugin.name": "pgoutput",
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "key.converter.schemas.enable": "false",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable": "false",`))
	checkFlags(t, r, []string{
		"--postgres-url=postgres://postgresuser:xxxxx@order-db:5432/orderdb",
		"--slot=debezium",
		"--publication=dbz_publication",
		"--table=inventory.outboxevent",
		"--topic-prefix=dbserver1",
		"--additional-field=type:header:eventType",
		"--route-topic-replacement=${routedByValue}.events",
		"--key-format=json",
		"--value-format=json",
	})
	if r.Flags[0].Value != "postgres://postgresuser:postgrespw@order-db:5432/orderdb" {
		t.Errorf("postgres-url value %q, want the password in it", r.Flags[0].Value)
	}
	ignored := map[string]bool{}
	for _, i := range r.Ignored {
		ignored[i.Option] = true
	}
	for _, o := range []string{"tasks.max", "tombstones.on.delete", "schema.include.list"} {
		if !ignored[o] {
			t.Errorf("%s is not listed as accepted without effect: %+v", o, r.Ignored)
		}
	}
	var notes = strings.Join(r.Notes, "\n")
	if !strings.Contains(notes, "header.converter is not set") {
		t.Errorf("notes %q do not mention the worker's header converter", notes)
	}
}

// TestStringConverterAndEnvelopeVariants: StringConverter is the raw format (no flag),
// JsonConverter with schemas (its default) json-envelope, also for headers.
func TestStringConverterAndEnvelopeVariants(t *testing.T) {
	r := mustConvert(t, withOptions(`
    "plugin.name": "pgoutput",
    "key.converter": "org.apache.kafka.connect.storage.StringConverter",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "header.converter": "org.apache.kafka.connect.json.JsonConverter",
    "header.converter.schemas.enable": "true",`))
	got := flags(r)
	tail := got[len(got)-2:]
	if tail[0] != "--value-format=json-envelope" || tail[1] != "--header-format=json-envelope" {
		t.Errorf("format flags %v", got)
	}
	for _, f := range got {
		if strings.HasPrefix(f, "--key-format") {
			t.Errorf("StringConverter key gave %s; raw is the default", f)
		}
	}
}

// TestMissingConverterAssumesKafkaDefault: without key.converter the worker's applies;
// Kafka ships JsonConverter with schemas, which is assumed and said.
func TestMissingConverterAssumesKafkaDefault(t *testing.T) {
	r := mustConvert(t, withOptions(`"plugin.name": "pgoutput",`))
	got := strings.Join(flags(r), " ")
	if !strings.Contains(got, "--key-format=json-envelope") || !strings.Contains(got, "--value-format=json-envelope") {
		t.Errorf("flags %s, want json-envelope key and value", got)
	}
	if n := strings.Join(r.Notes, "\n"); !strings.Contains(n, "key.converter is not set") || !strings.Contains(n, "value.converter is not set") {
		t.Errorf("notes %q", n)
	}
}

// TestRESTFormAndProperties: the POST /connectors form ({"name","config"}) and a
// connect-standalone .properties file read the same.
func TestRESTFormAndProperties(t *testing.T) {
	post := `{"name": "outbox-connector", "config": ` + withOptions(`"plugin.name": "pgoutput", "key.converter": "org.apache.kafka.connect.storage.StringConverter", "value.converter": "org.apache.kafka.connect.storage.StringConverter",`) + `}`
	props := `# connect-standalone connector properties
name=outbox-connector
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
plugin.name=pgoutput
database.hostname=order-db
database.port=5432
database.user=postgresuser
database.password=postgrespw
database.dbname=orderdb
topic.prefix=dbserver1
schema.include.list=inventory
table.include.list=inventory\\.outboxevent
tombstones.on.delete=false
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter : org.apache.kafka.connect.storage.StringConverter
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.route.topic.replacement=${routedByValue}.events
! a continued line
transforms.outbox.table.fields.additional.placement=type:header:\
    eventType
`
	want := []string{
		"--postgres-url=postgres://postgresuser:xxxxx@order-db:5432/orderdb",
		"--slot=debezium",
		"--publication=dbz_publication",
		"--table=inventory.outboxevent",
		"--topic-prefix=dbserver1",
		"--additional-field=type:header:eventType",
		"--route-topic-replacement=${routedByValue}.events",
	}
	for name, text := range map[string]string{"POST": post, "properties": props} {
		r := mustConvert(t, text)
		if r.Name != "outbox-connector" {
			t.Errorf("%s: name %q", name, r.Name)
		}
		got := flags(r)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s flags:\n got %s\nwant %s", name, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	}
}

// TestEveryRouterOption: each EventRouter option reaches its flag, whatever the alias.
func TestEveryRouterOption(t *testing.T) {
	r := mustConvert(t, `{
  "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
  "plugin.name": "pgoutput",
  "slot.name": "outbox_slot", "publication.name": "outbox_pub", "publication.autocreate.mode": "filtered",
  "table.include.list": "public.outbox, billing.outbox",
  "key.converter": "org.apache.kafka.connect.storage.StringConverter",
  "value.converter": "org.apache.kafka.connect.json.JsonConverter",
  "header.converter": "org.apache.kafka.connect.storage.SimpleHeaderConverter",
  "status.update.interval.ms": 2000,
  "transforms": "unwrapOutbox",
  "transforms.unwrapOutbox.type": "io.debezium.transforms.outbox.EventRouter",
  "transforms.unwrapOutbox.table.field.event.id": "event_id",
  "transforms.unwrapOutbox.table.field.event.key": "agg_id",
  "transforms.unwrapOutbox.table.field.event.payload": "body",
  "transforms.unwrapOutbox.table.field.event.timestamp": "created_at",
  "transforms.unwrapOutbox.table.field.event.schema.version": "v",
  "transforms.unwrapOutbox.table.fields.additional.placement": "type:envelope:eventType, part:partition",
  "transforms.unwrapOutbox.table.field.additional.missing": "IGNORE",
  "transforms.unwrapOutbox.route.by.field": "agg_type",
  "transforms.unwrapOutbox.route.topic.regex": "(?<routedByValue>.*)",
  "transforms.unwrapOutbox.route.topic.replacement": "events.${routedByValue}",
  "transforms.unwrapOutbox.route.tombstone.on.empty.payload": true,
  "transforms.unwrapOutbox.table.op.invalid.behavior": "fatal",
  "transforms.unwrapOutbox.table.expand.json.payload": "true",
  "transforms.unwrapOutbox.table.json.payload.null.behavior": "optional_bytes",
  "transforms.unwrapOutbox.table.field.event.type": "type"
}`)
	checkFlags(t, r, []string{
		"--slot=outbox_slot",
		"--publication=outbox_pub",
		"--table=public.outbox",
		"--table=billing.outbox",
		"--status-interval=2000ms",
		"--id-column=event_id",
		"--key-column=agg_id",
		"--payload-column=body",
		"--timestamp-column=created_at",
		"--schema-version-column=v",
		"--additional-field=type:envelope:eventType,part:partition",
		"--additional-field-missing=ignore",
		"--aggregatetype-column=agg_type",
		"--route-topic-regex=(?<routedByValue>.*)",
		"--route-topic-replacement=events.${routedByValue}",
		"--tombstone-on-empty-payload=true",
		"--op-invalid-behavior=fatal",
		"--expand-json-payload=true",
		"--json-payload-null-behavior=optional_bytes",
		"--value-format=json-envelope",
	})
}

// TestRefusals: every option pgoutbox cannot honour is named, all at once.
func TestRefusals(t *testing.T) {
	_, err := convert(t, `{
  "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
  "plugin.name": "pgoutput",
  "table.include.list": "public.outbox_.*",
  "value.converter": "io.confluent.connect.avro.AvroConverter",
  "decimal.handling.mode": "string",
  "column.exclude.list": "public.outbox.secret",
  "producer.override.acks": "1",
  "producer.override.sasl.jaas.config": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
  "producer.override.buffer.memory": "1000",
  "transforms": "outbox,route",
  "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
  "transforms.outbox.table.fields.additional.placement": "type:body",
  "transforms.outbox.surprise": "1",
  "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
  "transforms.route.regex": ".*",
  "made.up.option": "x"
}`)
	want := []string{"table.include.list", "transforms.route.type", "transforms.outbox.table.fields.additional.placement",
		"transforms.outbox.surprise", "transforms.route.regex", "value.converter", "producer.override.acks",
		"producer.override.buffer.memory", "producer.override.sasl.jaas.config", "column.exclude.list",
		"decimal.handling.mode", "made.up.option"}
	got := refusedOptions(err)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("refused\n got %v\nwant %v\n(error: %v)", got, want, err)
	}
}

// TestProducerOverrides: Java producer properties with a librdkafka counterpart pass
// through, renamed where needed; a PLAIN login's username and password become
// librdkafka's; secrets are redacted in what is shown.
func TestProducerOverrides(t *testing.T) {
	r := mustConvert(t, withOptions(`"plugin.name": "pgoutput", "key.converter": "org.apache.kafka.connect.storage.StringConverter",
    "value.converter": "org.apache.kafka.connect.storage.StringConverter",
    "producer.override.compression.type": "zstd",
    "producer.override.max.request.size": "2097152",
    "producer.override.security.protocol": "SASL_SSL",
    "producer.override.sasl.mechanism": "PLAIN",
    "producer.override.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"app\" password=\"s3cret\";",`))
	got := strings.Join(flags(r), " ")
	for _, want := range []string{"--kafka-config=compression.type=zstd", "--kafka-config=message.max.bytes=2097152",
		"--kafka-config=security.protocol=SASL_SSL", "--kafka-config=sasl.mechanism=PLAIN",
		"--kafka-config=sasl.username=app", "--kafka-config=sasl.password=xxxxx"} {
		if !strings.Contains(got, want) {
			t.Errorf("flags %s lack %s", got, want)
		}
	}
	for _, f := range r.Flags {
		if f.Name == "kafka-config" && strings.HasPrefix(f.Value, "sasl.password=") && f.Value != "sasl.password=s3cret" {
			t.Errorf("sasl.password value %q", f.Value)
		}
	}
}

// TestNotDerived: what cannot be derived is a flag with a problem, not a guess.
func TestNotDerived(t *testing.T) {
	r := mustConvert(t, `{"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "plugin.name": "pgoutput",
  "database.hostname": "db", "database.password": "${file:/secrets/db.properties:password}", "database.user": "u",
  "key.converter": "org.apache.kafka.connect.storage.StringConverter", "value.converter": "org.apache.kafka.connect.storage.StringConverter",
  "transforms": "o", "transforms.o.type": "io.debezium.transforms.outbox.EventRouter"}`)
	var problems []string
	for _, f := range r.Flags {
		if f.Problem != "" {
			problems = append(problems, f.Name)
		}
	}
	if strings.Join(problems, ",") != "postgres-url,table" {
		t.Errorf("flags with problems %v (all: %v), want postgres-url and table", problems, flags(r))
	}
}

// TestPrint: the printed command line carries the flags, secrets redacted, and the
// accepted and not derived options.
func TestPrint(t *testing.T) {
	r := mustConvert(t, withOptions(`"plugin.name": "pgoutput",`))
	var b bytes.Buffer
	if err := r.Print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"pgoutbox \\\n  --postgres-url postgres://postgresuser:xxxxx@order-db:5432/orderdb \\\n",
		"--route-topic-replacement '${routedByValue}.events'", "--key-format json-envelope", "tasks.max: Kafka Connect bookkeeping",
		"--table <- table.include.list"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "postgrespw") {
		t.Errorf("output shows the password:\n%s", out)
	}
}

func TestReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(path, []byte(withOptions(`"plugin.name": "pgoutput",`)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(path); err != nil {
		t.Error(err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("ReadFile of a missing file succeeded")
	}
	if _, err := Parse([]byte(`{"config": 1}`)); err == nil {
		t.Error(`Parse accepted "config": 1`)
	}
	if _, err := Parse([]byte(`{"a": {"b": 1}}`)); err == nil {
		t.Error("Parse accepted a nested object as a value")
	}
}
