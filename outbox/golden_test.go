package outbox

import (
	"testing"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// The golden bytes in this file are what Kafka Connect writes for Debezium 3.6's
// PostgreSQL connector with the Outbox Event Router, derived from the sources named in
// each case (apache/kafka connect/json JsonConverter.java; debezium
// debezium-connect-plugins/.../outbox/EventRouterDelegate.java and JsonSchemaData.java;
// debezium-connector-postgres PostgresValueConverter.java). They are written out by
// hand from those sources, not produced by the code under test.

// debeziumOutbox is the outbox table of Debezium's documentation ("Basic outbox table",
// outbox-event-router.adoc): id uuid, aggregatetype/aggregateid/type varchar(255), all
// NOT NULL, and a nullable jsonb payload.
func debeziumOutbox() (*decoder.Relation, []ColumnInfo) {
	rel := &decoder.Relation{ID: 16400, Namespace: "public", Name: "outbox", Columns: []decoder.Column{
		{Name: "id", TypeOID: oidUUID, TypeMod: -1},
		{Name: "aggregatetype", TypeOID: oidVarchar, TypeMod: 259},
		{Name: "aggregateid", TypeOID: oidVarchar, TypeMod: 259},
		{Name: "type", TypeOID: oidVarchar, TypeMod: 259},
		{Name: "payload", TypeOID: oidJSONB, TypeMod: -1},
	}}
	cols := []ColumnInfo{{"id", true}, {"aggregatetype", true}, {"aggregateid", true}, {"type", true}, {"payload", false}}
	return rel, cols
}

const goldenID = "4d47e190-0402-4048-bc2c-89dd54343cdc"

func goldenRow(payload decoder.Value) []decoder.Value {
	return []decoder.Value{text(goldenID), text("order"), text("1"), text("OrderCreated"), payload}
}

// golden maps one row of rel with cfg (after SetColumns) and returns the record.
func golden(t *testing.T, cfg Config, rel *decoder.Relation, cols []ColumnInfo, values []decoder.Value) *Record {
	t.Helper()
	m := newMapper(t, cfg)
	m.SetColumns(rel.QualifiedName(), cols)
	return mapOK(t, m, rel, values)
}

func withFormats(key, value, header Format) Config {
	c := DefaultConfig()
	c.KeyFormat, c.ValueFormat, c.HeaderFormat = key, value, header
	return c
}

func checkBytes(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if string(got) != want {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func checkNil(t *testing.T, what string, got []byte) {
	t.Helper()
	if got != nil {
		t.Errorf("%s = %q, want null (nil)", what, got)
	}
}

// TestGoldenRawIsStringConverter: StringConverter.fromConnectData writes value.toString()
// (StringConverter.java:86-88), so a varchar key and a jsonb payload are their text, and a
// null value stays null; SimpleHeaderConverter.fromConnectHeader writes a string as it is
// (SimpleHeaderConverter.java:79-83).
func TestGoldenRawIsStringConverter(t *testing.T) {
	rel, cols := debeziumOutbox()
	r := golden(t, DefaultConfig(), rel, cols, goldenRow(text(`{"id": 1}`)))
	checkBytes(t, "key", r.Key, `1`)
	checkBytes(t, "value", r.Value, `{"id": 1}`)
	checkBytes(t, "id header", r.Headers[0].Value, goldenID)
	r = golden(t, DefaultConfig(), rel, cols, goldenRow(null))
	checkNil(t, "value of a NULL payload", r.Value)
}

// TestGoldenJSONString: JsonConverter with schemas.enable=false writes convertToJson of
// the value alone (JsonConverter.java:326, 575-576); a STRING becomes a text node
// (JsonConverter.java:624-626), which Jackson quotes and escapes. The payload's schema is
// Debezium's Json string (PostgresValueConverter.java:215-217), the key's the aggregateid
// field's schema (EventRouterDelegate.java:287-298).
func TestGoldenJSONString(t *testing.T) {
	rel, cols := debeziumOutbox()
	r := golden(t, withFormats(FormatJSON, FormatJSON, FormatJSON), rel, cols, goldenRow(text(`{"id": 1}`)))
	checkBytes(t, "key", r.Key, `"1"`)
	checkBytes(t, "value", r.Value, `"{\"id\": 1}"`)
	checkBytes(t, "id header", r.Headers[0].Value, `"`+goldenID+`"`)
	if string(r.ID) != goldenID {
		t.Errorf("ID = %q, want the id's text whatever the header format", r.ID)
	}
}

// TestGoldenJSONEnvelopeString: schemas.enable=true wraps the value in
// {"schema":…,"payload":…} (JsonSchema.Envelope, schema first), the schema written by
// asJsonSchema in the order type, optional, name, version (JsonConverter.java:369-447);
// "optional" is the column's nullability (NOT NULL aggregateid: false; nullable payload:
// true); Json and Uuid carry their names and version 1 (Json.java:20-21, Uuid.java:21-22,
// SchemaFactory.java:358-368).
func TestGoldenJSONEnvelopeString(t *testing.T) {
	rel, cols := debeziumOutbox()
	r := golden(t, withFormats(FormatJSONEnvelope, FormatJSONEnvelope, FormatJSONEnvelope), rel, cols, goldenRow(text(`{"id": 1}`)))
	checkBytes(t, "key", r.Key, `{"schema":{"type":"string","optional":false},"payload":"1"}`)
	checkBytes(t, "value", r.Value, `{"schema":{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1},"payload":"{\"id\": 1}"}`)
	checkBytes(t, "id header", r.Headers[0].Value, `{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"`+goldenID+`"}`)
}

// TestGoldenOptionalWithoutCatalog: a column the catalog did not describe is optional, as
// Debezium defaults an undetermined optionality to true (PgOutputMessageDecoder.java:378-384).
func TestGoldenOptionalWithoutCatalog(t *testing.T) {
	rel, _ := debeziumOutbox()
	m := newMapper(t, withFormats(FormatJSONEnvelope, FormatRaw, FormatRaw))
	r := mapOK(t, m, rel, goldenRow(text(`{}`)))
	checkBytes(t, "key", r.Key, `{"schema":{"type":"string","optional":true},"payload":"1"}`)
}

// TestGoldenNullPayload: a NULL payload of an optional schema is a NullNode
// (JsonConverter.java:584-591), serialized as the four bytes null; with schemas the
// envelope keeps the schema. StringConverter writes null for null. With
// route.tombstone.on.empty.payload the schema and the value are both null
// (EventRouterDelegate.java:214-222) and fromConnectData returns null
// (JsonConverter.java:322-324): a tombstone in every format.
func TestGoldenNullPayload(t *testing.T) {
	rel, cols := debeziumOutbox()
	r := golden(t, withFormats(FormatRaw, FormatJSON, FormatRaw), rel, cols, goldenRow(null))
	checkBytes(t, "json value", r.Value, `null`)
	r = golden(t, withFormats(FormatRaw, FormatJSONEnvelope, FormatRaw), rel, cols, goldenRow(null))
	checkBytes(t, "json-envelope value", r.Value, `{"schema":{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1},"payload":null}`)
	for _, f := range []Format{FormatRaw, FormatJSON, FormatJSONEnvelope} {
		c := withFormats(FormatRaw, f, FormatRaw)
		c.TombstoneOnEmptyPayload = true
		r = golden(t, c, rel, cols, goldenRow(null))
		checkNil(t, string(f)+" value with route.tombstone.on.empty.payload", r.Value)
		// payload.toString().trim().isEmpty(): a blank text payload is empty too.
		textRel, _ := debeziumOutbox()
		textRel.Columns[4].TypeOID = oidText
		r = golden(t, c, textRel, cols, goldenRow(text(" \t\n")))
		checkNil(t, string(f)+" value of a blank payload with route.tombstone.on.empty.payload", r.Value)
	}
}

// TestGoldenBytea: bytea is Connect BYTES with binary.handling.mode=bytes
// (PostgresValueConverter.java:238-239); JsonConverter writes a binary node
// (JsonConverter.java:627-629), which Jackson writes as standard base64 with padding.
func TestGoldenBytea(t *testing.T) {
	rel, cols := debeziumOutbox()
	rel.Columns[4].TypeOID = oidBytea
	payload := text(`\x0102fffe`) // bytes 01 02 ff fe: base64 AQL//g==
	r := golden(t, withFormats(FormatRaw, FormatJSON, FormatRaw), rel, cols, goldenRow(payload))
	checkBytes(t, "json value", r.Value, `"AQL//g=="`)
	r = golden(t, withFormats(FormatRaw, FormatJSONEnvelope, FormatRaw), rel, cols, goldenRow(payload))
	checkBytes(t, "json-envelope value", r.Value, `{"schema":{"type":"bytes","optional":true},"payload":"AQL//g=="}`)
	r = golden(t, withFormats(FormatRaw, FormatRaw, FormatRaw), rel, cols, goldenRow(payload))
	checkBytes(t, "raw value", r.Value, "\x01\x02\xff\xfe")
}

// TestGoldenKeys: the key schema is the key column's schema. Integers are INT16/INT32/
// INT64 (JdbcValueConverters.java:183-191) written as JSON numbers (JsonConverter.java:610-617);
// text is a plain STRING; uuid the Uuid string; numeric(10,2) a Kafka Decimal (bytes named
// org.apache.kafka.connect.data.Decimal, version 1, parameters scale then
// connect.decimal.precision: Decimal.builder, SpecialValueDecimal.java:155-161) whose value
// is base64 of the unscaled BigInteger.toByteArray (decimal.format=BASE64,
// JsonConverter.java:155-160); numeric without precision Debezium's VariableScaleDecimal
// struct (SchemaFactory.java:370-377, PostgresValueConverter.java:380-385).
func TestGoldenKeys(t *testing.T) {
	for _, c := range []struct {
		name          string
		oid           uint32
		typmod        int32
		notNull       bool
		text          string
		json, envelop string
	}{
		{"integer NOT NULL", oidInt4, -1, true, "1", `1`, `{"schema":{"type":"int32","optional":false},"payload":1}`},
		{"bigint", oidInt8, -1, false, "-9223372036854775808", `-9223372036854775808`, `{"schema":{"type":"int64","optional":true},"payload":-9223372036854775808}`},
		{"smallint", oidInt2, -1, true, "7", `7`, `{"schema":{"type":"int16","optional":false},"payload":7}`},
		{"text", oidText, -1, true, "order-1", `"order-1"`, `{"schema":{"type":"string","optional":false},"payload":"order-1"}`},
		{"char(3)", oidBPChar, 7, true, "ab ", `"ab "`, `{"schema":{"type":"string","optional":false},"payload":"ab "}`},
		{"uuid", oidUUID, -1, true, goldenID, `"` + goldenID + `"`, `{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"` + goldenID + `"}`},
		// 1.50 at scale 2 is unscaled 150 = 0x0096: toByteArray keeps a sign byte, base64 AJY=.
		{"numeric(10,2)", oidNumeric, 10<<16 | 2 + 4, true, "1.50", `"AJY="`,
			`{"schema":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"10"}},"payload":"AJY="}`},
		// -1 is 0xff: /w==.
		{"numeric(5,0) negative", oidNumeric, 5<<16 + 4, true, "-1", `"/w=="`,
			`{"schema":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"0","connect.decimal.precision":"5"}},"payload":"/w=="}`},
		// 12.345 is scale 3, unscaled 12345 = 0x3039: MDk=.
		{"numeric", oidNumeric, -1, true, "12.345", `{"scale":3,"value":"MDk="}`,
			`{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"scale"},{"type":"bytes","optional":false,"field":"value"}],"optional":false,"name":"io.debezium.data.VariableScaleDecimal","version":1,"doc":"Variable scaled decimal"},"payload":{"scale":3,"value":"MDk="}}`},
	} {
		rel, cols := debeziumOutbox()
		rel.Columns[2].TypeOID, rel.Columns[2].TypeMod = c.oid, c.typmod
		cols[2].NotNull = c.notNull
		values := goldenRow(text("{}"))
		values[2] = text(c.text)
		r := golden(t, withFormats(FormatJSON, FormatRaw, FormatRaw), rel, cols, values)
		checkBytes(t, c.name+" json key", r.Key, c.json)
		r = golden(t, withFormats(FormatJSONEnvelope, FormatRaw, FormatRaw), rel, cols, values)
		checkBytes(t, c.name+" json-envelope key", r.Key, c.envelop)
		r = golden(t, withFormats(FormatRaw, FormatRaw, FormatRaw), rel, cols, values)
		checkBytes(t, c.name+" raw key", r.Key, c.text)
	}
}

// TestGoldenNullKey: a NULL aggregateid of a nullable column is a NullNode in JSON and
// null with StringConverter.
func TestGoldenNullKey(t *testing.T) {
	rel, cols := debeziumOutbox()
	cols[2].NotNull = false
	values := goldenRow(text("{}"))
	values[2] = null
	r := golden(t, withFormats(FormatJSON, FormatRaw, FormatRaw), rel, cols, values)
	checkBytes(t, "json key", r.Key, `null`)
	r = golden(t, withFormats(FormatJSONEnvelope, FormatRaw, FormatRaw), rel, cols, values)
	checkBytes(t, "json-envelope key", r.Key, `{"schema":{"type":"string","optional":true},"payload":null}`)
	r = golden(t, withFormats(FormatRaw, FormatRaw, FormatRaw), rel, cols, values)
	checkNil(t, "raw key", r.Key)
}

// TestGoldenEscaping: Jackson escapes '"', '\\', the short forms \b \t \n \f \r and other
// control characters as \u00XX in upper case (CharTypes.java:159-176,
// UTF8JsonGenerator._writeGenericEscape); '/', non-ASCII text and U+2028 are written as
// they are, but a character beyond U+FFFF is two escaped surrogates, upper case
// (UTF8JsonGenerator._outputMultiByteChar, UTF8JsonGenerator.java:2196-2212, with
// COMBINE_UNICODE_SURROGATES_IN_UTF8 off by default, JsonGenerator.java:284) — as the
// real Debezium's capture shows for "ünïcødé ключ 😀".
func TestGoldenEscaping(t *testing.T) {
	rel, cols := debeziumOutbox()
	values := goldenRow(text("{}"))
	values[2] = text("a\"b\\c/d\be\tf\ng\fh\ri\x01j\x1fk\x7fé\u2028ключ😀\xf0")
	r := golden(t, withFormats(FormatJSON, FormatRaw, FormatRaw), rel, cols, values)
	checkBytes(t, "json key", r.Key, `"a\"b\\c/d\be\tf\ng\fh\ri\u0001j\u001Fk`+"\x7fé\u2028ключ"+`\uD83D\uDE00`+"\xf0"+`"`)
}

// TestGoldenScalarHeaders: header-placed fields carry their column's schema
// (EventRouterDelegate.java:203-208); booleans are JSON booleans (JsonConverter.java:622-623),
// doubles Java's Double.toString (Jackson's writeNumber(double)), a timestamp Debezium's
// MicroTimestamp: epoch microseconds of the local date-time taken as UTC, named
// io.debezium.time.MicroTimestamp version 1 (MicroTimestamp.java:27-43), and with precision
// 3 io.debezium.time.Timestamp in milliseconds (TemporalPrecisionMode adaptive).
func TestGoldenScalarHeaders(t *testing.T) {
	rel, cols := debeziumOutbox()
	rel.Columns = append(rel.Columns,
		decoder.Column{Name: "urgent", TypeOID: oidBool, TypeMod: -1},
		decoder.Column{Name: "weight", TypeOID: oidFloat8, TypeMod: -1},
		decoder.Column{Name: "created", TypeOID: oidTimestamp, TypeMod: -1},
		decoder.Column{Name: "created_ms", TypeOID: oidTimestamp, TypeMod: 3},
		decoder.Column{Name: "tiny", TypeOID: oidFloat8, TypeMod: -1},
		decoder.Column{Name: "ratio", TypeOID: oidFloat4, TypeMod: -1},
	)
	cols = append(cols, ColumnInfo{"urgent", true}, ColumnInfo{"weight", false}, ColumnInfo{"created", true}, ColumnInfo{"created_ms", true}, ColumnInfo{"tiny", true}, ColumnInfo{"ratio", true})
	values := append(goldenRow(text("{}")), text("t"), text("10000000"), text("2019-01-31 12:13:01.5"), text("2019-01-31 12:13:01.123"), text("0.0001"), text("0.1"))
	cfg := withFormats(FormatRaw, FormatRaw, FormatJSONEnvelope)
	cfg.Fields = []Field{
		{Column: "urgent", Placement: PlaceHeader}, {Column: "weight", Placement: PlaceHeader, Alias: "w"},
		{Column: "created", Placement: PlaceHeader}, {Column: "created_ms", Placement: PlaceHeader},
		{Column: "tiny", Placement: PlaceHeader}, {Column: "ratio", Placement: PlaceHeader},
	}
	r := golden(t, cfg, rel, cols, values)
	want := []struct{ key, value string }{
		{"id", `{"schema":{"type":"string","optional":false,"name":"io.debezium.data.Uuid","version":1},"payload":"` + goldenID + `"}`},
		{"urgent", `{"schema":{"type":"boolean","optional":false},"payload":true}`},
		{"w", `{"schema":{"type":"double","optional":true},"payload":1.0E7}`},
		// 2019-01-31T12:13:01.5Z = 1548936781.5 s
		{"created", `{"schema":{"type":"int64","optional":false,"name":"io.debezium.time.MicroTimestamp","version":1},"payload":1548936781500000}`},
		{"created_ms", `{"schema":{"type":"int64","optional":false,"name":"io.debezium.time.Timestamp","version":1},"payload":1548936781123}`},
		{"tiny", `{"schema":{"type":"double","optional":false},"payload":1.0E-4}`},
		{"ratio", `{"schema":{"type":"float","optional":false},"payload":0.1}`},
	}
	if len(r.Headers) != len(want) {
		t.Fatalf("headers %+v, want %d", r.Headers, len(want))
	}
	for i, w := range want {
		if r.Headers[i].Key != w.key {
			t.Errorf("header %d is %q, want %q", i, r.Headers[i].Key, w.key)
		}
		checkBytes(t, "header "+w.key, r.Headers[i].Value, w.value)
	}
}

// TestGoldenEnvelopeFields: an envelope-placed field makes the value a struct of
// "payload" and the field under its alias (EventRouterDelegate.java:183-201, 414-437),
// with schemas a struct schema named "<topic.prefix>.<schema>.<table>.<route value>.Value"
// (EventRouterDelegate.getSchemaName, EventRouterDelegate.java:439-455, the table's value
// schema named by TableSchemaBuilder.java:162), optional false, fields listing their
// schemas each followed by "field" (JsonConverter.java:415-424).
func TestGoldenEnvelopeFields(t *testing.T) {
	rel, cols := debeziumOutbox()
	cfg := withFormats(FormatRaw, FormatJSON, FormatRaw)
	cfg.Fields = []Field{{Column: "type", Placement: PlaceEnvelope, Alias: "eventType"}}
	cfg.TopicPrefix = "dbserver1"
	r := golden(t, cfg, rel, cols, goldenRow(text(`{"id": 1}`)))
	checkBytes(t, "json value", r.Value, `{"payload":"{\"id\": 1}","eventType":"OrderCreated"}`)

	cfg.ValueFormat = FormatJSONEnvelope
	r = golden(t, cfg, rel, cols, goldenRow(text(`{"id": 1}`)))
	checkBytes(t, "json-envelope value", r.Value, `{"schema":{"type":"struct","fields":[`+
		`{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1,"field":"payload"},`+
		`{"type":"string","optional":false,"field":"eventType"}],`+
		`"optional":false,"name":"dbserver1.public.outbox.order.Value"},`+
		`"payload":{"payload":"{\"id\": 1}","eventType":"OrderCreated"}}`)

	// table.field.event.schema.version sets the struct's version (EventRouterDelegate.java:186, 403-412).
	rel.Columns = append(rel.Columns, decoder.Column{Name: "schemaversion", TypeOID: oidInt4, TypeMod: -1})
	cfg.SchemaVersionColumn = "schemaversion"
	r = golden(t, cfg, rel, cols, append(goldenRow(null), text("3")))
	checkBytes(t, "versioned json-envelope value", r.Value, `{"schema":{"type":"struct","fields":[`+
		`{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1,"field":"payload"},`+
		`{"type":"string","optional":false,"field":"eventType"}],`+
		`"optional":false,"name":"dbserver1.public.outbox.order.Value","version":3},`+
		`"payload":{"payload":null,"eventType":"OrderCreated"}}`)
}

// debeziumDocPayload is the payload of the expansion example in Debezium's documentation
// (outbox-event-router.adoc, "Expanding escaped JSON String as JSON"), as jsonb prints it.
const debeziumDocPayload = `{"id": 1, "lineItems": [{"id": 1, "item": "Debezium in Action", "status": "ENTERED", "quantity": 2, "totalPrice": 39.98}, {"id": 2, "item": "Debezium for Dummies", "status": "ENTERED", "quantity": 1, "totalPrice": 29.99}], "orderDate": "2019-01-31T12:13:01", "customerId": 123}`

// TestGoldenExpandJSON: table.expand.json.payload parses the payload and infers a schema
// (JsonSchemaData.toConnectSchema, JsonSchemaData.java:52-88): an object is an optional
// struct named after its key path ("payload", "payload.lineItems"), an int an optional
// int32, a fraction an optional float64 ("double"), a string an optional string, an array
// an optional array of its elements' schema; the value is written in the schema's field
// order (JsonConverter.java:678-686), compact.
func TestGoldenExpandJSON(t *testing.T) {
	rel, cols := debeziumOutbox()
	cfg := withFormats(FormatRaw, FormatJSON, FormatRaw)
	cfg.ExpandJSONPayload = true
	r := golden(t, cfg, rel, cols, goldenRow(text(debeziumDocPayload)))
	value := `{"id":1,"lineItems":[{"id":1,"item":"Debezium in Action","status":"ENTERED","quantity":2,"totalPrice":39.98},` +
		`{"id":2,"item":"Debezium for Dummies","status":"ENTERED","quantity":1,"totalPrice":29.99}],"orderDate":"2019-01-31T12:13:01","customerId":123}`
	checkBytes(t, "json value", r.Value, value)

	cfg.ValueFormat = FormatJSONEnvelope
	r = golden(t, cfg, rel, cols, goldenRow(text(debeziumDocPayload)))
	checkBytes(t, "json-envelope value", r.Value, `{"schema":{"type":"struct","fields":[`+
		`{"type":"int32","optional":true,"field":"id"},`+
		`{"type":"array","items":{"type":"struct","fields":[`+
		`{"type":"int32","optional":true,"field":"id"},{"type":"string","optional":true,"field":"item"},`+
		`{"type":"string","optional":true,"field":"status"},{"type":"int32","optional":true,"field":"quantity"},`+
		`{"type":"double","optional":true,"field":"totalPrice"}],"optional":true,"name":"payload.lineItems"},"optional":true,"field":"lineItems"},`+
		`{"type":"string","optional":true,"field":"orderDate"},{"type":"int32","optional":true,"field":"customerId"}],`+
		`"optional":true,"name":"payload"},"payload":`+value+`}`)
}

// TestGoldenExpandJSONNulls: with table.json.payload.null.behavior=ignore a null member
// has no schema and is left out (JsonSchemaData.java:80-84); with optional_bytes it is an
// optional bytes field holding null. Numbers beyond int are int64 (isLong) and a number
// with an exponent is a double written as Java does (1.0E10).
func TestGoldenExpandJSONNulls(t *testing.T) {
	rel, cols := debeziumOutbox()
	rel.Columns[4].TypeOID = oidJSON // json keeps the text as written; jsonb would print 1e10 as 10000000000
	payload := text(`{"a": null, "b": 5000000000, "c": 1e10, "d": [], "e": {}}`)
	cfg := withFormats(FormatRaw, FormatJSONEnvelope, FormatRaw)
	cfg.ExpandJSONPayload = true
	r := golden(t, cfg, rel, cols, goldenRow(payload))
	checkBytes(t, "ignore", r.Value, `{"schema":{"type":"struct","fields":[`+
		`{"type":"int64","optional":true,"field":"b"},{"type":"double","optional":true,"field":"c"},`+
		`{"type":"struct","fields":[],"optional":true,"name":"payload.e","field":"e"}],"optional":true,"name":"payload"},`+
		`"payload":{"b":5000000000,"c":1.0E10,"e":{}}}`)
	cfg.JSONPayloadNulls = NullOptionalBytes
	r = golden(t, cfg, rel, cols, goldenRow(payload))
	checkBytes(t, "optional_bytes", r.Value, `{"schema":{"type":"struct","fields":[`+
		`{"type":"bytes","optional":true,"field":"a"},`+
		`{"type":"int64","optional":true,"field":"b"},{"type":"double","optional":true,"field":"c"},`+
		`{"type":"struct","fields":[],"optional":true,"name":"payload.e","field":"e"}],"optional":true,"name":"payload"},`+
		`"payload":{"a":null,"b":5000000000,"c":1.0E10,"e":{}}}`)
}

// TestGoldenExpandJSONFallsBack: a payload that does not start with '{' or '[', or does
// not parse, or whose array mixes types, is left as the string it was (Debezium logs
// "JSON expansion failed", EventRouterDelegate.java:162-175, 317-321).
func TestGoldenExpandJSONFallsBack(t *testing.T) {
	rel, cols := debeziumOutbox()
	rel.Columns[4].TypeOID = oidText
	cfg := withFormats(FormatRaw, FormatJSON, FormatRaw)
	cfg.ExpandJSONPayload = true
	for _, c := range [][2]string{
		{`"just a string"`, `"\"just a string\""`},
		{` {"leading": "space"}`, `" {\"leading\": \"space\"}"`},
		{`{"broken": `, `"{\"broken\": "`},
		{`{"mixed": [1, "a"]}`, `"{\"mixed\": [1, \"a\"]}"`},
		{`{"ints": [1, 5000000000]}`, `"{\"ints\": [1, 5000000000]}"`},
	} {
		r := golden(t, cfg, rel, cols, goldenRow(text(c[0])))
		checkBytes(t, c[0], r.Value, c[1])
	}
}
