package main

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
)

func TestMappingFlags(t *testing.T) {
	o := mustBuild(t, nil, append(append([]string{}, required...),
		"--table", "outbox", "--table", "billing.events",
		"--key-format", "json", "--value-format", "json-envelope", "--header-format", "json",
		"--additional-field", "type:header:eventType, part:partition", "--additional-field", "version:envelope",
		"--additional-field-missing", "IGNORE", "--timestamp-column", "created", "--schema-version-column", "v",
		"--tombstone-on-empty-payload", "--expand-json-payload", "--json-payload-null-behavior", "optional_bytes",
		"--op-invalid-behavior", "fatal", "--topic-prefix", "app", "--route-topic-replacement", "x.${routedByValue}")...)
	m := o.cfg.Mapping
	want := outbox.DefaultConfig()
	want.Tables = []string{"public.outbox", "billing.events"}
	want.KeyFormat, want.ValueFormat, want.HeaderFormat = outbox.FormatJSON, outbox.FormatJSONEnvelope, outbox.FormatJSON
	want.Fields = []outbox.Field{{Column: "type", Placement: "header", Alias: "eventType"}, {Column: "part", Placement: "partition"}, {Column: "version", Placement: "envelope"}}
	want.MissingFields, want.TimestampColumn, want.SchemaVersionColumn = "ignore", "created", "v"
	want.TombstoneOnEmptyPayload, want.ExpandJSONPayload, want.JSONPayloadNulls = true, true, "optional_bytes"
	want.InvalidOp, want.TopicPrefix, want.RouteTopicReplacement = "fatal", "app", "x.${routedByValue}"
	if !reflect.DeepEqual(m, want) {
		t.Errorf("Mapping\n got %+v\nwant %+v", m, want)
	}
	o = mustBuild(t, env{"PGOUTBOX_TABLE": "outbox, billing.events", "PGOUTBOX_VALUE_FORMAT": "json"}, required...)
	if !reflect.DeepEqual(o.cfg.Mapping.Tables, want.Tables) || o.cfg.Mapping.ValueFormat != outbox.FormatJSON {
		t.Errorf("from the environment: Tables %v ValueFormat %q", o.cfg.Mapping.Tables, o.cfg.Mapping.ValueFormat)
	}
}

// TestMappingFlagErrors: a bad value exits 2 and names its flag.
func TestMappingFlagErrors(t *testing.T) {
	setEnv(t, env{})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--key-format", "avro"}, "--key-format"},
		{[]string{"--header-format", "JSON"}, "--header-format"},
		{[]string{"--additional-field", "type:body"}, "--additional-field"},
		{[]string{"--op-invalid-behavior", "skip"}, "--op-invalid-behavior"},
		{[]string{"--additional-field-missing", "skip"}, "--additional-field-missing"},
		{[]string{"--json-payload-null-behavior", "keep"}, "--json-payload-null-behavior"},
		{[]string{"--route-topic-regex", "("}, "route topic regex"},
		{[]string{"--additional-field", "type:envelope"}, "StringConverter"},
		{[]string{"--table", "", "--table", "outbox"}, "--table"},
	} {
		code, _, stderr := runMain(t, append(append([]string{}, required...), c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d stderr %q, want 2 naming %s", c.args, code, stderr, c.want)
		}
	}
}

// debeziumFile writes a Debezium connector configuration: the outbox example's options
// (debezium-examples outbox/register-postgres.json) with pgoutput and JsonConverter
// without schemas, plus producer overrides.
func debeziumFile(t *testing.T, extra string) string {
	t.Helper()
	cfg := `{"name": "outbox-connector", "config": {
    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "tasks.max": "1",
    "plugin.name": "pgoutput",
    "database.hostname": "order-db",
    "database.port": "5432",
    "database.user": "postgresuser",
    "database.password": "postgrespw",
    "database.dbname" : "orderdb",
    "topic.prefix": "dbserver1",
    "schema.include.list": "inventory",
    "table.include.list" : "inventory.outboxevent",
    "tombstones.on.delete" : "false",
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "key.converter.schemas.enable": "false",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable": "false",
    "producer.override.compression.type": "zstd",
    "producer.override.linger.ms": "100",` + extra + `
    "transforms" : "outbox",
    "transforms.outbox.type" : "io.debezium.transforms.outbox.EventRouter",
    "transforms.outbox.route.topic.replacement" : "${routedByValue}.events",
    "transforms.outbox.table.fields.additional.placement" : "type:header:eventType"
}}`
	path := filepath.Join(t.TempDir(), "connector.json")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDebeziumConfigFlag(t *testing.T) {
	path := debeziumFile(t, "")
	o := mustBuild(t, nil, "--kafka-brokers", "127.0.0.1:1", "--debezium-config", path)
	c := o.cfg
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"PostgresURL", c.PostgresURL, "postgres://postgresuser:postgrespw@order-db:5432/orderdb"},
		{"Slot", c.Slot, "debezium"},
		{"Publication", c.Publication, "dbz_publication"},
		{"Tables", c.Mapping.Tables, []string{"inventory.outboxevent"}},
		{"TopicPrefix", c.Mapping.TopicPrefix, "dbserver1"},
		{"KeyFormat", c.Mapping.KeyFormat, outbox.FormatJSON},
		{"ValueFormat", c.Mapping.ValueFormat, outbox.FormatJSON},
		{"HeaderFormat", c.Mapping.HeaderFormat, outbox.FormatRaw},
		{"RouteTopicReplacement", c.Mapping.RouteTopicReplacement, "${routedByValue}.events"},
		{"Fields", c.Mapping.Fields, []outbox.Field{{Column: "type", Placement: "header", Alias: "eventType"}}},
		{"compression.type", c.Kafka.Properties["compression.type"], "zstd"},
		{"linger.ms", c.Kafka.Properties["linger.ms"], "100"},
	} {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
	if o.debezium == nil || len(o.debezium.Ignored) == 0 {
		t.Errorf("the options accepted without effect are not kept for the log: %+v", o.debezium)
	}

	// Explicit flags win, from the command line or the environment; Kafka properties
	// merge property by property.
	o = mustBuild(t, env{"PGOUTBOX_KEY_FORMAT": "raw", "PGOUTBOX_STATUS_INTERVAL": "3s"}, "--kafka-brokers", "127.0.0.1:1",
		"--debezium-config", path, "--slot", "mine", "--postgres-url", "postgres://other@db/x", "--kafka-config", "linger.ms=5")
	c = o.cfg
	if c.Slot != "mine" || c.PostgresURL != "postgres://other@db/x" || c.Mapping.KeyFormat != outbox.FormatRaw ||
		c.Mapping.ValueFormat != outbox.FormatJSON || c.StatusInterval != 3*time.Second {
		t.Errorf("explicit flags did not win: slot %q url %q key %q value %q status %v", c.Slot, c.PostgresURL, c.Mapping.KeyFormat, c.Mapping.ValueFormat, c.StatusInterval)
	}
	if c.Kafka.Properties["linger.ms"] != "5" || c.Kafka.Properties["compression.type"] != "zstd" {
		t.Errorf("kafka properties %v, want linger.ms=5 (explicit) and compression.type=zstd (debezium)", c.Kafka.Properties)
	}
}

// TestDebeziumConfigErrors: an option pgoutbox cannot honour, or a flag it cannot derive
// and was not given, is a usage error naming it.
func TestDebeziumConfigErrors(t *testing.T) {
	setEnv(t, env{})
	refused := debeziumFile(t, `"decimal.handling.mode": "double",`)
	code, _, stderr := runMain(t, "--kafka-brokers", "127.0.0.1:1", "--debezium-config", refused)
	if code != 2 || !strings.Contains(stderr, "decimal.handling.mode") {
		t.Errorf("refused option: exit %d stderr %q", code, stderr)
	}
	noTable := strings.Replace(mustRead(t, debeziumFile(t, "")), `"table.include.list" : "inventory.outboxevent",`, "", 1)
	path := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(path, []byte(noTable), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runMain(t, "--kafka-brokers", "127.0.0.1:1", "--debezium-config", path)
	if code != 2 || !strings.Contains(stderr, "--table") || !strings.Contains(stderr, "table.include.list") {
		t.Errorf("underivable table: exit %d stderr %q", code, stderr)
	}
	if o := mustBuild(t, nil, "--kafka-brokers", "127.0.0.1:1", "--debezium-config", path, "--table", "inventory.outboxevent"); o.cfg.Mapping.FirstTable() != "inventory.outboxevent" {
		t.Errorf("explicit --table: %v", o.cfg.Mapping.Tables)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDebeziumConfigCommand: the subcommand prints the equivalent flags, secrets
// redacted, and the printed flags are real flags.
func TestDebeziumConfigCommand(t *testing.T) {
	setEnv(t, env{})
	code, stdout, stderr := runMain(t, "debezium-config", debeziumFile(t, `"producer.override.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"app\" password=\"kafkapw\";",`))
	if code != 0 {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
	for _, want := range []string{"--postgres-url postgres://postgresuser:xxxxx@order-db:5432/orderdb", "--slot debezium",
		"--table inventory.outboxevent", "--key-format json", "--value-format json", "--kafka-config sasl.password=xxxxx",
		"tombstones.on.delete:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "postgrespw") || strings.Contains(stdout, "kafkapw") {
		t.Errorf("output shows a secret:\n%s", stdout)
	}
	known := map[string]bool{}
	for _, name := range flagNames() {
		known[name] = true
	}
	for _, line := range strings.Split(stdout, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "--"); ok {
			name, _, _ := strings.Cut(rest, " ")
			if !known[name] {
				t.Errorf("printed flag --%s is not a pgoutbox flag", name)
			}
		}
	}
	if code, _, _ := runMain(t, "debezium-config"); code != 2 {
		t.Errorf("without a file: exit %d, want 2", code)
	}
	if code, stdout, _ := runMain(t, "debezium-config", "--help"); code != 0 || !strings.Contains(stdout, "Usage: pgoutbox debezium-config FILE") {
		t.Errorf("--help: exit %d stdout %q", code, stdout)
	}
}

func flagNames() []string {
	var names []string
	f := newRelayFlags()
	f.fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	return names
}
