package outbox

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// TestRouterFollowsRegexRouter: Debezium's default regex and replacement give
// "outbox.event.<value>"; a replacement without a regex takes the default regex; the
// replacement string follows java.util.regex (named and numbered groups, backslash
// escapes); a value the regex does not match whole is the topic as it is
// (RegexRouter.java:69-71).
func TestRouterFollowsRegexRouter(t *testing.T) {
	for _, c := range []struct {
		regex, replacement, value, want string
	}{
		{"", "", "order", "outbox.event.order"},
		{"", "${routedByValue}.events", "order", "order.events"}, // debezium-examples outbox/register-postgres.json
		{"(?<routedByValue>.*)", "outbox.${routedByValue}", "Customer", "outbox.Customer"},
		{"(.*)_(.*)", "$2.$1", "order_eu", "eu.order"},
		{"(.*)", "$10", "x", "x0"}, // one group: "$10" is group 1 then "0"
		{"(.*)", `\e\v.$1`, "x", "ev.x"},
		{"order|customer", "known.$0", "customer", "known.customer"},
		{"order|customer", "known.$0", "invoice", "invoice"},      // no whole match: unchanged
		{"a|ab", "x.$0.", "ab", "x.a.b"},                          // matches() succeeds, replaceFirst finds "a"
		{"(?<t>[a-z]+)(?<n>[0-9]+)?", "${t}-${n}", "abc", "abc-"}, // a group that did not take part is empty
	} {
		cfg := DefaultConfig()
		cfg.RouteTopicRegex, cfg.RouteTopicReplacement = c.regex, c.replacement
		if c.regex == "" && c.replacement == "" {
			cfg.RouteTopicReplacement = DefaultRouteReplacement
		}
		m := newMapper(t, cfg)
		r := mapOK(t, m, outboxRel(oidJSONB), row(text("e"), text(c.value), text("k"), text("T"), text("{}")))
		if r.Topic != c.want {
			t.Errorf("regex %q replacement %q on %q: topic %q, want %q", c.regex, c.replacement, c.value, r.Topic, c.want)
		}
	}
}

func TestRouterRejectsWhatJavaRejects(t *testing.T) {
	for _, c := range []struct{ regex, replacement, want string }{
		{"(.*)", "$2", "no group 2"},
		{"(.*)", "${nope}", "no group with name"},
		{"(.*)", "x$", "group index is missing"},
		{"(.*)", `x\`, "to be escaped is missing"},
		{"(.*)", "$x", "illegal group reference"},
		{`(a)\1`, "$1", "route topic regex"}, // a backreference: RE2 has none
	} {
		cfg := DefaultConfig()
		cfg.RouteTopicRegex, cfg.RouteTopicReplacement = c.regex, c.replacement
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("regex %q replacement %q: Validate() = %v, want %q", c.regex, c.replacement, err, c.want)
		}
	}
	cfg := DefaultConfig()
	cfg.TopicTemplate, cfg.RouteTopicReplacement = "{aggregatetype}", "x"
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted a topic template together with a route replacement")
	}
}

// TestRouterRejectsIllegalTopic: a routed name Kafka refuses is the row's fault.
func TestRouterRejectsIllegalTopic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RouteTopicReplacement = "${routedByValue} events"
	m := newMapper(t, cfg)
	e := mapRowError(t, m, outboxRel(oidJSONB), row(text("e"), text("order"), text("k"), text("T"), text("{}")))
	if e.Topic != "order events" || !strings.Contains(e.Reason, "character") {
		t.Errorf("row error %+v", e)
	}
}

func TestParseFields(t *testing.T) {
	got, err := ParseFields(" type:header:eventType, version:ENVELOPE ,part:partition,,")
	if err != nil {
		t.Fatal(err)
	}
	want := []Field{{"type", PlaceHeader, "eventType"}, {"version", PlaceEnvelope, ""}, {"part", PlacePartition, ""}}
	if len(got) != len(want) {
		t.Fatalf("ParseFields = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"type", "type:body", ":header", "a:header:b:c"} {
		if _, err := ParseFields(bad); err == nil {
			t.Errorf("ParseFields(%q) accepted it", bad)
		}
	}
}

func TestValidateNewOptions(t *testing.T) {
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"envelope field with raw value", with(func(c *Config) { c.Fields = []Field{{"type", PlaceEnvelope, ""}} }), "StringConverter"},
		{"expand with raw value", with(func(c *Config) { c.ExpandJSONPayload = true }), "StringConverter"},
		{"envelope alias payload", with(func(c *Config) {
			c.ValueFormat = FormatJSON
			c.Fields = []Field{{"type", PlaceEnvelope, "payload"}}
		}), "set twice"},
		{"envelope schema without prefix", with(func(c *Config) {
			c.ValueFormat = FormatJSONEnvelope
			c.Fields = []Field{{"type", PlaceEnvelope, ""}}
		}), "topic.prefix"},
		{"bad format", with(func(c *Config) { c.KeyFormat = "avro" }), "key format"},
		{"bad placement", with(func(c *Config) { c.Fields = []Field{{"type", "body", ""}} }), "placement"},
		{"bad missing behavior", with(func(c *Config) { c.MissingFields = "skip" }), "error or ignore"},
		{"bad null behavior", with(func(c *Config) { c.JSONPayloadNulls = "drop" }), "optional_bytes"},
		{"bad op behavior", with(func(c *Config) { c.InvalidOp = "skip" }), "warn, error or fatal"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}

// extendedRel is the Debezium-style outbox with the columns additional fields use.
func extendedRel() *decoder.Relation {
	rel := outboxRel(oidJSONB)
	rel.Columns = append(rel.Columns,
		decoder.Column{Name: "part", TypeOID: oidInt4, TypeMod: -1},
		decoder.Column{Name: "created", TypeOID: oidTimestamp, TypeMod: -1},
		decoder.Column{Name: "created_tz", TypeOID: oidTimestampTZ, TypeMod: -1},
	)
	return rel
}

func extendedRow(part, created, createdTZ decoder.Value) []decoder.Value {
	return append(row(text("e1"), text("Order"), text("42"), text("OrderCreated"), text("{}")), part, created, createdTZ)
}

// TestPartitionPlacement: a partition field sets Record.Partition; NULL leaves it to
// the partitioner (-1), as a null partition does in Connect.
func TestPartitionPlacement(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Fields = []Field{{Column: "part", Placement: PlacePartition, Alias: "ignored"}}
	m := newMapper(t, cfg)
	rel := extendedRel()
	if r := mapOK(t, m, rel, extendedRow(text("3"), null, null)); r.Partition != 3 || len(r.Headers) != 1 {
		t.Errorf("partition column 3: Partition %d headers %+v", r.Partition, r.Headers)
	}
	if r := mapOK(t, m, rel, extendedRow(null, null, null)); r.Partition != -1 {
		t.Errorf("NULL partition column: Partition %d, want -1", r.Partition)
	}
	mapRowError(t, m, rel, extendedRow(text("-1"), null, null))
	if r := mapOK(t, newMapper(t, DefaultConfig()), rel, extendedRow(text("3"), null, null)); r.Partition != -1 {
		t.Errorf("without a partition field: Partition %d, want -1", r.Partition)
	}
	cfg.Fields = []Field{{Column: "created", Placement: PlacePartition}}
	if err := newMapper(t, cfg).Bind(rel); err == nil {
		t.Error("Bind accepted a timestamp column as the partition")
	}
}

// TestEventTimestamp: table.field.event.timestamp sets Record.Timestamp from a timestamp
// (taken as UTC, truncated to milliseconds) or a timestamptz; NULL means the commit
// time (zero).
func TestEventTimestamp(t *testing.T) {
	rel := extendedRel()
	for _, c := range []struct {
		column string
		values []decoder.Value
		want   time.Time
	}{
		{"created", extendedRow(null, text("2019-01-31 12:13:01.123456"), null), time.Date(2019, 1, 31, 12, 13, 1, 123_000_000, time.UTC)},
		{"created", extendedRow(null, null, null), time.Time{}},
		{"created_tz", extendedRow(null, null, text("2019-01-31 14:13:01.5+02")), time.Date(2019, 1, 31, 12, 13, 1, 500_000_000, time.UTC)},
		{"created_tz", extendedRow(null, null, text("2019-01-31 12:13:01-03:30")), time.Date(2019, 1, 31, 15, 43, 1, 0, time.UTC)},
	} {
		cfg := DefaultConfig()
		cfg.TimestampColumn = c.column
		r := mapOK(t, newMapper(t, cfg), rel, c.values)
		if !r.Timestamp.Equal(c.want) {
			t.Errorf("%s %v: Timestamp %v, want %v", c.column, c.values[6:], r.Timestamp, c.want)
		}
	}
	cfg := DefaultConfig()
	cfg.TimestampColumn = "created"
	mapRowError(t, newMapper(t, cfg), rel, extendedRow(null, text("infinity"), null))
	cfg.TimestampColumn = "part"
	if err := newMapper(t, cfg).Bind(rel); err == nil {
		t.Error("Bind accepted an integer timestamp column")
	}
	cfg.TimestampColumn = "nope"
	if err := newMapper(t, cfg).Bind(rel); err == nil {
		t.Error("Bind accepted a missing timestamp column")
	}
}

// TestMissingFields: with table.field.additional.missing=error a field whose column the
// table lacks fails the binding; with ignore the field is skipped and Columns does not
// require it.
func TestMissingFields(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Fields = []Field{{Column: "tenant", Placement: PlaceHeader}, {Column: "type", Placement: PlaceHeader, Alias: "eventType"}}
	if err := newMapper(t, cfg).Bind(outboxRel(oidJSONB)); err == nil || !strings.Contains(err.Error(), `"tenant"`) {
		t.Errorf("Bind with a missing field: %v, want an error naming tenant", err)
	}
	cfg.MissingFields = MissingIgnore
	r := mapOK(t, newMapper(t, cfg), outboxRel(oidJSONB), row(text("e"), text("Order"), text("k"), text("Created"), text("{}")))
	if len(r.Headers) != 2 || r.Headers[1].Key != "eventType" || string(r.Headers[1].Value) != "Created" {
		t.Errorf("headers %+v, want id and eventType", r.Headers)
	}
	cols, err := cfg.Columns()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cols {
		if c == "tenant" || c == "type" {
			t.Errorf("Columns() = %v requires an ignorable field", cols)
		}
	}
}

// TestHeaderPlacementAndNulls: header fields follow the --header-column headers; a
// NULL raw header is a null header value; Kafka allows the same header twice, and so
// does Debezium.
func TestHeaderPlacementAndNulls(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Headers = []HeaderColumn{{Column: "aggregatetype", Name: "agg"}}
	cfg.Fields = []Field{{Column: "type", Placement: PlaceHeader, Alias: "eventType"}, {Column: "aggregateid", Placement: PlaceHeader, Alias: "id"}}
	r := mapOK(t, newMapper(t, cfg), outboxRel(oidJSONB), row(text("e"), text("Order"), text("42"), null, text("{}")))
	want := []struct{ key, value string }{{"id", "e"}, {"agg", "Order"}, {"eventType", ""}, {"id", "42"}}
	if len(r.Headers) != len(want) {
		t.Fatalf("headers %+v", r.Headers)
	}
	for i, w := range want {
		if r.Headers[i].Key != w.key || string(r.Headers[i].Value) != w.value {
			t.Errorf("header %d = %s=%q, want %s=%q", i, r.Headers[i].Key, r.Headers[i].Value, w.key, w.value)
		}
	}
	if r.Headers[2].Value != nil {
		t.Errorf("NULL header value %q, want nil", r.Headers[2].Value)
	}
}

// TestSeveralTables: every configured table matches and maps with its own binding, even
// when the tables' columns are in different orders; json-envelope envelope schemas are
// named after each row's own table.
func TestSeveralTables(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Tables = []string{"public.outbox", "billing.outbox"}
	cfg.ValueFormat = FormatJSONEnvelope
	cfg.TopicPrefix = "app"
	cfg.Fields = []Field{{Column: "type", Placement: PlaceEnvelope}}
	m := newMapper(t, cfg)
	a := outboxRel(oidJSONB)
	b := &decoder.Relation{ID: 16500, Namespace: "billing", Name: "outbox", Columns: []decoder.Column{
		{Name: "payload", TypeOID: oidJSONB}, {Name: "type", TypeOID: oidText}, {Name: "aggregateid", TypeOID: oidText},
		{Name: "aggregatetype", TypeOID: oidText}, {Name: "id", TypeOID: oidUUID},
	}}
	other := &decoder.Relation{Namespace: "public", Name: "orders"}
	if !m.Matches(a) || !m.Matches(b) || m.Matches(other) {
		t.Fatalf("Matches: %v %v %v", m.Matches(a), m.Matches(b), m.Matches(other))
	}
	for i := 0; i < 2; i++ { // alternate, as rows of two tables interleave in the WAL
		ra := mapOK(t, m, a, row(text("a1"), text("Order"), text("1"), text("Created"), text("{}")))
		if ra.Topic != "outbox.event.Order" || !strings.Contains(string(ra.Value), `"name":"app.public.outbox.Order.Value"`) {
			t.Errorf("public.outbox row: topic %q value %s", ra.Topic, ra.Value)
		}
		rb := mapOK(t, m, b, []decoder.Value{text("{}"), text("Paid"), text("2"), text("Invoice"), text("b1")})
		if rb.Topic != "outbox.event.Invoice" || string(rb.Key) != "2" || string(rb.ID) != "b1" ||
			!strings.Contains(string(rb.Value), `"name":"app.billing.outbox.Invoice.Value"`) || !strings.Contains(string(rb.Value), `"type":"Paid"`) {
			t.Errorf("billing.outbox row: topic %q key %q id %q value %s", rb.Topic, rb.Key, rb.ID, rb.Value)
		}
	}
}

// TestSetColumnsRebinds: new catalog facts apply to the next row.
func TestSetColumnsRebinds(t *testing.T) {
	rel, cols := debeziumOutbox()
	m := newMapper(t, withFormats(FormatJSONEnvelope, FormatRaw, FormatRaw))
	if r := mapOK(t, m, rel, goldenRow(text("{}"))); !strings.Contains(string(r.Key), `"optional":true`) {
		t.Errorf("key before SetColumns: %s", r.Key)
	}
	m.SetColumns("public.outbox", cols)
	if r := mapOK(t, m, rel, goldenRow(text("{}"))); !strings.Contains(string(r.Key), `"optional":false`) {
		t.Errorf("key after SetColumns: %s", r.Key)
	}
}

// TestJSONFormatRejectsUnsupportedTypes: a column type pgoutbox cannot write as
// Debezium's JSON fails the binding and names the column; the raw format takes it.
func TestJSONFormatRejectsUnsupportedTypes(t *testing.T) {
	rel := outboxRel(oidJSONB)
	rel.Columns[2].TypeOID = 1186 // interval
	if err := newMapper(t, withFormats(FormatJSON, FormatRaw, FormatRaw)).Bind(rel); err == nil || !strings.Contains(err.Error(), `"aggregateid"`) {
		t.Errorf("Bind of an interval key in json: %v", err)
	}
	if err := newMapper(t, DefaultConfig()).Bind(rel); err != nil {
		t.Errorf("Bind of an interval key in raw: %v", err)
	}
}

// TestExpandMergesArrayElements: object elements of different shapes merge into one
// required struct (SchemaUtil.copySchemaBasics does not copy optionality), fields in the
// order they first appear; an element lacking a field gets null.
func TestExpandMergesArrayElements(t *testing.T) {
	s, n, outcome, err := expandPayload("payload", []byte(`{"items": [{"a": 1}, {"b": "x", "a": 2}]}`), NullIgnore)
	if err != nil || outcome != expandDone {
		t.Fatalf("expandPayload: %v %v", outcome, err)
	}
	gotSchema := string(appendSchemaJSON(nil, s))
	wantSchema := `{"type":"struct","fields":[{"type":"array","items":{"type":"struct","fields":[` +
		`{"type":"int32","optional":true,"field":"a"},{"type":"string","optional":true,"field":"b"}],` +
		`"optional":false,"name":"payload.items"},"optional":true,"field":"items"}],"optional":true,"name":"payload"}`
	if gotSchema != wantSchema {
		t.Errorf("schema\n got %s\nwant %s", gotSchema, wantSchema)
	}
	got, err := appendExpanded(nil, s, n)
	if err != nil || string(got) != `{"items":[{"a":1,"b":null},{"a":2,"b":"x"}]}` {
		t.Errorf("value %s, %v", got, err)
	}
	// A null element in a merged (required) struct array is Debezium's DataException.
	if _, _, _, err := expandPayload("payload", []byte(`{"items": [{"a": 1}, {"b": 2}, null]}`), NullIgnore); !errors.Is(err, errExpandMismatch) {
		t.Errorf("null element of a merged struct array: %v, want a mismatch", err)
	}
	// A field typed by the first element and given another type later is a mismatch.
	if _, _, _, err := expandPayload("payload", []byte(`{"items": [{"a": 1}, {"a": "x"}]}`), NullIgnore); !errors.Is(err, errExpandMismatch) {
		t.Errorf("retyped field: %v, want a mismatch", err)
	}
	// A top-level array has a schema but no struct to hold it; an empty one no schema.
	if _, _, _, err := expandPayload("payload", []byte(`[1, 2]`), NullIgnore); !errors.Is(err, errExpandMismatch) {
		t.Errorf("top-level array: %v, want a mismatch", err)
	}
	if _, _, outcome, err := expandPayload("payload", []byte(`[]`), NullIgnore); err != nil || outcome != expandSchemaless {
		t.Errorf("empty top-level array: %v %v", outcome, err)
	}
}

// TestExpandSchemalessValue: an empty top-level array is published as a string with no
// schema ({"schema":null,…}), as JsonConverter writes a value whose schema is null.
func TestExpandSchemalessValue(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ValueFormat, cfg.ExpandJSONPayload = FormatJSONEnvelope, true
	r := mapOK(t, newMapper(t, cfg), outboxRel(oidJSONB), row(text("e"), text("Order"), text("k"), text("T"), text("[]")))
	checkBytes(t, "value", r.Value, `{"schema":null,"payload":"[]"}`)
	cfg.ValueFormat = FormatJSON
	r = mapOK(t, newMapper(t, cfg), outboxRel(oidJSONB), row(text("e"), text("Order"), text("k"), text("T"), text("[]")))
	checkBytes(t, "json value", r.Value, `"[]"`)
}

func TestParseJSONKeepsJacksonsReading(t *testing.T) {
	n, err := parseJSON([]byte(`{"a": 1, "b": 2, "a": 3} trailing`))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.names) != 2 || n.names[0] != "a" || n.vals[0].num != 3 {
		t.Errorf("repeated member: names %v, first value %+v; want a first, with the last value", n.names, n.vals[0])
	}
	for text, kind := range map[string]jkind{"2147483647": jInt, "-2147483648": jInt, "2147483648": jLong,
		"9223372036854775808": jBigInt, "1.0": jDouble, "1e2": jDouble, "-0": jInt} {
		n, err := parseJSON([]byte(text))
		if err != nil || n.kind != kind {
			t.Errorf("%s: kind %v err %v, want %v", text, n, err, kind)
		}
	}
	n, err = parseJSON([]byte(`"\u00e9\ud83d\ude00\n"`))
	if err != nil || n.str != "é😀\n" {
		t.Errorf("escapes: %q %v", n.str, err)
	}
	for _, bad := range []string{`{"a" 1}`, `[1,]`, `01`, `"a` + "\x01" + `"`, `tru`, `{`, `1.`, `-`} {
		if _, err := parseJSON([]byte(bad)); err == nil {
			t.Errorf("parseJSON(%q) accepted it", bad)
		}
	}
}

// TestJavaDouble: Double.toString's layout: plain digits with at least one fraction
// digit for 1e-3 <= |d| < 1e7, computerized scientific notation otherwise, the shortest
// digits that read back.
func TestJavaDouble(t *testing.T) {
	for f, want := range map[float64]string{
		1: "1.0", 0.1: "0.1", 39.98: "39.98", 100: "100.0", 1e7: "1.0E7", 9999999: "9999999.0", 0.001: "0.001",
		0.0001: "1.0E-4", 1.5e300: "1.5E300", -2.5: "-2.5", 123456.789: "123456.789", 2e23: "2.0E23",
		math.Copysign(0, -1): "-0.0", math.Inf(1): `"Infinity"`, 1.2345678e-5: "1.2345678E-5",
	} {
		if got := string(appendJavaDouble(nil, f)); got != want {
			t.Errorf("%v: %s, want %s", f, got, want)
		}
	}
	if got := string(appendJavaFloat32(nil, 0.1)); got != "0.1" {
		t.Errorf("float 0.1: %s", got)
	}
}

// TestTwosComplement: BigInteger.toByteArray's minimal two's complement.
func TestTwosComplement(t *testing.T) {
	for n, want := range map[int64][]byte{0: {0}, 1: {1}, 127: {0x7f}, 128: {0, 0x80}, 255: {0, 0xff}, 256: {1, 0},
		-1: {0xff}, -128: {0x80}, -129: {0xff, 0x7f}, -256: {0xff, 0}} {
		if got := twosComplement(big.NewInt(n)); string(got) != string(want) {
			t.Errorf("%d: % x, want % x", n, got, want)
		}
	}
}
