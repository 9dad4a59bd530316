package outbox

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// outboxRel is the Debezium-style outbox table as a hand-built relation.
func outboxRel(payloadOID uint32) *decoder.Relation {
	return &decoder.Relation{
		ID: 16400, Namespace: "public", Name: "outbox",
		Columns: []decoder.Column{
			{Name: "id", TypeOID: oidUUID, Key: true},
			{Name: "aggregatetype", TypeOID: oidText},
			{Name: "aggregateid", TypeOID: oidText},
			{Name: "type", TypeOID: oidText},
			{Name: "payload", TypeOID: payloadOID},
		},
	}
}

func text(s string) decoder.Value { return decoder.Value{Kind: decoder.KindText, Data: []byte(s)} }

var null = decoder.Value{Kind: decoder.KindNull}

// row returns the values of outboxRel in column order.
func row(id, aggType, aggID, typ, payload decoder.Value) []decoder.Value {
	return []decoder.Value{id, aggType, aggID, typ, payload}
}

func newMapper(t testing.TB, cfg Config) *Mapper {
	t.Helper()
	m, err := NewMapper(cfg)
	if err != nil {
		t.Fatalf("NewMapper: %v", err)
	}
	return m
}

// mapOK maps one row and fails the test on error.
func mapOK(t *testing.T, m *Mapper, rel *decoder.Relation, values []decoder.Value) *Record {
	t.Helper()
	r, err := m.Map(rel, values)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	if r == nil {
		t.Fatal("Map returned a nil record and no error")
	}
	return r
}

// mapRowError maps one row and returns its *RowError, failing the test otherwise.
func mapRowError(t *testing.T, m *Mapper, rel *decoder.Relation, values []decoder.Value) *RowError {
	t.Helper()
	r, err := m.Map(rel, values)
	if err == nil {
		t.Fatalf("Map = %+v, nil; want a *RowError", r)
	}
	var rowErr *RowError
	if !errors.As(err, &rowErr) {
		t.Fatalf("Map error %v (%T) is not a *RowError", err, err)
	}
	if r != nil {
		t.Errorf("Map returned a record along with error %v", err)
	}
	return rowErr
}

func TestNewMapperRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		func() Config { c := DefaultConfig(); c.TopicTemplate = "{x"; return c }(),
		func() Config { c := DefaultConfig(); c.IDColumn = ""; return c }(),
	} {
		if m, err := NewMapper(cfg); err == nil {
			t.Errorf("NewMapper(%+v) = %v, nil; want an error", cfg, m)
		}
	}
}

func TestMapperMatches(t *testing.T) {
	for _, c := range []struct {
		table, ns, name string
		want            bool
	}{
		{"public.outbox", "public", "outbox", true},
		{"outbox", "public", "outbox", true},
		{"app.events", "app", "events", true},
		{"public.outbox", "app", "outbox", false},
		{"public.outbox", "public", "outbox2", false},
		{"public.outbox", "public", "Outbox", false},
	} {
		cfg := DefaultConfig()
		cfg.Tables = []string{c.table}
		m := newMapper(t, cfg)
		rel := &decoder.Relation{Namespace: c.ns, Name: c.name}
		if got := m.Matches(rel); got != c.want {
			t.Errorf("table %q: Matches(%s.%s) = %v, want %v", c.table, c.ns, c.name, got, c.want)
		}
	}
}

func TestMapDefaultMapping(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	rel := outboxRel(oidJSONB)
	// The payload keeps its stored text, whitespace and key order included.
	payload := `{"b": 1,  "a": [1, 2]}`
	r := mapOK(t, m, rel, row(text("0b0e7e5c-1"), text("Order"), text("42"), text("OrderCreated"), text(payload)))

	if r.Topic != "outbox.event.Order" {
		t.Errorf("Topic = %q, want outbox.event.Order", r.Topic)
	}
	if string(r.Key) != "42" {
		t.Errorf("Key = %q, want 42", r.Key)
	}
	if string(r.Value) != payload {
		t.Errorf("Value = %q, want %q", r.Value, payload)
	}
	if string(r.ID) != "0b0e7e5c-1" {
		t.Errorf("ID = %q", r.ID)
	}
	if len(r.Headers) != 1 || r.Headers[0].Key != "id" || string(r.Headers[0].Value) != "0b0e7e5c-1" {
		t.Errorf("Headers = %+v, want only id=0b0e7e5c-1", r.Headers)
	}
}

func TestMapPayloadTypes(t *testing.T) {
	for _, c := range []struct {
		name   string
		oid    uint32
		stored string
		want   []byte
	}{
		{"jsonb", oidJSONB, `{"a": 1}`, []byte(`{"a": 1}`)},
		{"json", oidJSON, `{"a":1,"a":2}`, []byte(`{"a":1,"a":2}`)},
		{"text", oidText, "not json at all", []byte("not json at all")},
		{"varchar", oidVarchar, "v", []byte("v")},
		{"bpchar", oidBPChar, "abc  ", []byte("abc  ")},
		{"domain over text", firstUserOID + 7, "domain value", []byte("domain value")},
		{"bytea hex", oidBytea, `\x00ff41`, []byte{0x00, 0xff, 'A'}},
		{"bytea hex upper case", oidBytea, `\xDEADbeef`, []byte{0xde, 0xad, 0xbe, 0xef}},
		{"bytea escape format", oidBytea, `a\\b\001`, []byte{'a', '\\', 'b', 1}},
		{"bytea hex one byte", oidBytea, `\x41`, []byte("A")},
	} {
		m := newMapper(t, DefaultConfig())
		r, err := m.Map(outboxRel(c.oid), row(text("1"), text("Order"), text("k"), text("T"), text(c.stored)))
		if err != nil {
			t.Errorf("%s: Map: %v", c.name, err)
			continue
		}
		if !bytes.Equal(r.Value, c.want) {
			t.Errorf("%s: Value = %q, want %q", c.name, r.Value, c.want)
		}
	}
}

func TestMapInvalidByteaIsRowError(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	rowErr := mapRowError(t, m, outboxRel(oidBytea), row(text("e1"), text("Order"), text("k"), text("T"), text(`\xZZ`)))
	if rowErr.ID != "e1" || rowErr.Topic != "outbox.event.Order" {
		t.Errorf("RowError ID %q Topic %q, want e1 and outbox.event.Order", rowErr.ID, rowErr.Topic)
	}
	if !strings.Contains(rowErr.Reason, `"payload"`) {
		t.Errorf("Reason %q does not name the column", rowErr.Reason)
	}
	if string(rowErr.Payload) != `\xZZ` {
		t.Errorf("Payload copy = %q, want the stored text", rowErr.Payload)
	}
}

func TestMapNulls(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Headers = []HeaderColumn{{Column: "type", Name: "eventType"}}
	for _, oid := range []uint32{oidJSONB, oidBytea} {
		m := newMapper(t, cfg)
		r := mapOK(t, m, outboxRel(oid), row(text("1"), text("Order"), null, null, null))
		if r.Key != nil {
			t.Errorf("oid %d: NULL key gave Key %q, want nil", oid, r.Key)
		}
		if r.Value != nil {
			t.Errorf("oid %d: NULL payload gave Value %q, want nil (a tombstone)", oid, r.Value)
		}
		if r.Headers[1].Key != "eventType" || r.Headers[1].Value != nil {
			t.Errorf("oid %d: NULL header column gave %+v, want eventType with a nil value", oid, r.Headers[1])
		}
	}
}

func TestMapEmptyIsNotNull(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Headers = []HeaderColumn{{Column: "type", Name: "eventType"}}
	m := newMapper(t, cfg)
	r := mapOK(t, m, outboxRel(oidText), row(text("1"), text("Order"), text(""), text(""), text("")))
	if r.Key == nil || len(r.Key) != 0 {
		t.Errorf("empty key gave %#v, want a non-nil empty slice", r.Key)
	}
	if r.Value == nil || len(r.Value) != 0 {
		t.Errorf("empty payload gave %#v, want a non-nil empty slice", r.Value)
	}
	if h := r.Headers[1].Value; h == nil || len(h) != 0 {
		t.Errorf("empty header gave %#v, want a non-nil empty slice", h)
	}
	// A decoder may hand out a zero-length value with a nil Data; it is still not NULL.
	r = mapOK(t, m, outboxRel(oidText), row(text("1"), text("Order"), decoder.Value{Kind: 't'}, text("T"), decoder.Value{Kind: 't'}))
	if r.Key == nil || r.Value == nil {
		t.Errorf("text value with nil Data gave Key %#v Value %#v, want non-nil empty slices", r.Key, r.Value)
	}
}

// TestMapEmptyByteaIsNotNull: an empty bytea ('\x') is a zero-length Kafka value, not a
// tombstone, whether or not the mapper decoded a bytea before.
func TestMapEmptyByteaIsNotNull(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Headers = []HeaderColumn{{Column: "type", Name: "blob"}}
	rel := outboxRel(oidBytea)
	rel.Columns[3].TypeOID = oidBytea // the "type" column is a bytea header

	m := newMapper(t, cfg) // fresh: nothing decoded yet
	r := mapOK(t, m, rel, row(text("1"), text("Order"), text("k"), text(`\x`), text(`\x`)))
	if r.Value == nil {
		t.Errorf("first row: empty bytea payload gave a nil Value (a tombstone), want a non-nil empty slice")
	}
	if r.Headers[1].Value == nil {
		t.Errorf("first row: empty bytea header gave a nil value, want a non-nil empty slice")
	}

	mapOK(t, m, rel, row(text("2"), text("Order"), text("k"), text(`\x01`), text(`\x0102`)))
	r = mapOK(t, m, rel, row(text("3"), text("Order"), text("k"), text(`\x`), text(`\x`)))
	if r.Value == nil || len(r.Value) != 0 {
		t.Errorf("after a non-empty bytea: empty bytea payload gave %#v, want a non-nil empty slice", r.Value)
	}
}

func TestMapHeaders(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Headers = []HeaderColumn{{Column: "type", Name: "eventType"}, {Column: "trace", Name: "traceparent"}, {Column: "sig", Name: "signature"}}
	rel := outboxRel(oidJSONB)
	rel.Columns = append(rel.Columns,
		decoder.Column{Name: "trace", TypeOID: oidText},
		decoder.Column{Name: "sig", TypeOID: oidBytea})
	m := newMapper(t, cfg)
	values := append(row(text("e1"), text("Order"), text("k"), text("OrderCreated"), text(`{}`)), text("00-abc-01"), text(`\xcafe`))
	r := mapOK(t, m, rel, values)

	want := []Header{
		{"id", []byte("e1")},
		{"eventType", []byte("OrderCreated")},
		{"traceparent", []byte("00-abc-01")},
		{"signature", []byte{0xca, 0xfe}},
	}
	if len(r.Headers) != len(want) {
		t.Fatalf("Headers = %+v, want %+v", r.Headers, want)
	}
	for i := range want {
		if r.Headers[i].Key != want[i].Key || !bytes.Equal(r.Headers[i].Value, want[i].Value) {
			t.Errorf("header %d = %s=%q, want %s=%q", i, r.Headers[i].Key, r.Headers[i].Value, want[i].Key, want[i].Value)
		}
	}
}

func TestMapByteaPayloadAndHeaderDoNotOverlap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Headers = []HeaderColumn{{Column: "sig", Name: "signature"}}
	rel := outboxRel(oidBytea)
	rel.Columns = append(rel.Columns, decoder.Column{Name: "sig", TypeOID: oidBytea})
	m := newMapper(t, cfg)
	// A large header forces the scratch buffer to grow after the payload was decoded.
	big := `\x` + strings.Repeat("ab", 4096)
	r := mapOK(t, m, rel, append(row(text("e1"), text("Order"), text("k"), text("T"), text(`\x010203`)), text(big)))
	if !bytes.Equal(r.Value, []byte{1, 2, 3}) {
		t.Errorf("Value = %x, want 010203", r.Value)
	}
	if got := r.Headers[1].Value; len(got) != 4096 || got[0] != 0xab || got[4095] != 0xab {
		t.Errorf("signature header has %d bytes, want 4096 bytes of 0xab", len(got))
	}
}

func TestMapTemplate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TopicTemplate = "{aggregateid}.outbox.{aggregatetype}"
	m := newMapper(t, cfg)
	r := mapOK(t, m, outboxRel(oidJSONB), row(text("1"), text("Order"), text("acme"), text("T"), text("{}")))
	if r.Topic != "acme.outbox.Order" {
		t.Errorf("Topic = %q, want acme.outbox.Order", r.Topic)
	}

	cfg.TopicTemplate = "all-events"
	m = newMapper(t, cfg)
	r = mapOK(t, m, outboxRel(oidJSONB), row(text("1"), null, text("acme"), text("T"), text("{}")))
	if r.Topic != "all-events" {
		t.Errorf("literal template: Topic = %q, want all-events", r.Topic)
	}
}

func TestMapRowErrors(t *testing.T) {
	for _, c := range []struct {
		name       string
		values     []decoder.Value
		id, topic  string
		anyTopic   bool // the rendered but illegal name may or may not be reported
		reason     string
		key, paylo []byte
	}{
		{
			name:   "NULL id",
			values: row(null, text("Order"), text("k1"), text("T"), text(`{"a":1}`)),
			topic:  "outbox.event.Order",
			reason: `id column "id" is NULL`,
			key:    []byte("k1"), paylo: []byte(`{"a":1}`),
		},
		{
			name:   "NULL topic column",
			values: row(text("e1"), null, text("k1"), text("T"), text(`{}`)),
			id:     "e1",
			reason: `topic template column "aggregatetype" is NULL`,
			key:    []byte("k1"), paylo: []byte(`{}`),
		},
		{
			name:   "invalid topic name",
			values: row(text("e2"), text("Order Created"), null, text("T"), text(`{}`)),
			id:     "e2", anyTopic: true,
			reason: `"outbox.event.Order Created"`,
			key:    nil, paylo: []byte(`{}`),
		},
		{
			name:   "topic name too long",
			values: row(text("e3"), text(strings.Repeat("x", 240)), text("k"), text("T"), null),
			id:     "e3", anyTopic: true,
			reason: "Kafka allows 249",
			key:    []byte("k"), paylo: nil,
		},
		{
			name:   "unchanged TOAST payload",
			values: row(text("e4"), text("Order"), text("k"), text("T"), decoder.Value{Kind: decoder.KindUnchanged}),
			id:     "e4", topic: "outbox.event.Order",
			reason: "unchanged TOAST",
			key:    []byte("k"), paylo: []byte{},
		},
		{
			name:   "unknown value kind in key",
			values: row(text("e5"), text("Order"), decoder.Value{Kind: 'x', Data: []byte("k")}, text("T"), text("{}")),
			id:     "e5", topic: "outbox.event.Order",
			reason: "unknown value kind",
			key:    []byte("k"), paylo: []byte("{}"),
		},
		{
			name:   "unchanged TOAST id",
			values: row(decoder.Value{Kind: decoder.KindUnchanged}, text("Order"), text("k"), text("T"), text("{}")),
			topic:  "outbox.event.Order", // named even though the id failed
			reason: "unchanged TOAST",
			key:    []byte("k"), paylo: []byte("{}"),
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMapper(t, DefaultConfig())
			rowErr := mapRowError(t, m, outboxRel(oidJSONB), c.values)
			if rowErr.ID != c.id {
				t.Errorf("ID %q, want %q", rowErr.ID, c.id)
			}
			if rowErr.Topic != c.topic && !c.anyTopic {
				t.Errorf("Topic %q, want %q", rowErr.Topic, c.topic)
			}
			if !strings.Contains(rowErr.Reason, c.reason) {
				t.Errorf("Reason %q, want it to contain %q", rowErr.Reason, c.reason)
			}
			if !bytes.Equal(rowErr.Key, c.key) || (rowErr.Key == nil) != (c.key == nil) {
				t.Errorf("Key = %#v, want %#v", rowErr.Key, c.key)
			}
			if !bytes.Equal(rowErr.Payload, c.paylo) || (rowErr.Payload == nil) != (c.paylo == nil) {
				t.Errorf("Payload = %#v, want %#v", rowErr.Payload, c.paylo)
			}
		})
	}
}

// TestRowErrorCopiesKeyAndPayload: the decoded values alias the replication buffer,
// which is reused; a RowError kept for a dead-letter record must not change with it.
func TestRowErrorCopiesKeyAndPayload(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	values := row(null, text("Order"), text("key-1"), text("T"), text(`{"a":1}`))
	rowErr := mapRowError(t, m, outboxRel(oidJSONB), values)
	copy(values[2].Data, "XXXXX")
	copy(values[4].Data, "XXXXXXX")
	if string(rowErr.Key) != "key-1" || string(rowErr.Payload) != `{"a":1}` {
		t.Errorf("RowError changed with the decoded buffer: Key %q Payload %q", rowErr.Key, rowErr.Payload)
	}
}

func TestMapRowErrorDoesNotPoisonNextRow(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	rel := outboxRel(oidJSONB)
	mapRowError(t, m, rel, row(text("e1"), text("bad topic"), text("k"), text("T"), text("{}")))
	mapRowError(t, m, rel, row(text("e1"), text("bad topic"), text("k"), text("T"), text("{}"))) // not cached as valid
	r := mapOK(t, m, rel, row(text("e2"), text("Order"), text("k2"), text("T"), text("{}")))
	if r.Topic != "outbox.event.Order" || string(r.ID) != "e2" || string(r.Key) != "k2" {
		t.Errorf("record after a bad row: %+v", r)
	}
}

func TestMapUnsupportedPayloadType(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	r, err := m.Map(outboxRel(oidInt4), row(text("1"), text("Order"), text("k"), text("T"), text("42")))
	if err == nil {
		t.Fatalf("Map with an integer payload = %+v, nil; want an error", r)
	}
	var rowErr *RowError
	if errors.As(err, &rowErr) {
		t.Errorf("unsupported payload type gave a *RowError (%v); it is the table's fault, not the row's", err)
	}
	if !strings.Contains(err.Error(), "oid 23") || !strings.Contains(err.Error(), `"payload"`) {
		t.Errorf("error %q does not name the column and its type", err)
	}
	if err := m.Bind(outboxRel(oidInt4)); err == nil {
		t.Error("Bind accepted an integer payload column")
	}
}

func TestMapWrongValueCount(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	values := row(text("1"), text("Order"), text("k"), text("T"), text("{}"))
	_, err := m.Map(outboxRel(oidJSONB), values[:4])
	if err == nil {
		t.Fatal("Map accepted 4 values for 5 columns")
	}
	var rowErr *RowError
	if errors.As(err, &rowErr) {
		t.Errorf("value count mismatch gave a *RowError: %v", err)
	}
}

func TestMapSchemaChangeDropsColumn(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	mapOK(t, m, outboxRel(oidJSONB), row(text("1"), text("Order"), text("k"), text("T"), text("{}")))

	// PostgreSQL sends a new Relation after ALTER TABLE ... DROP COLUMN aggregateid.
	changed := outboxRel(oidJSONB)
	changed.Columns = append(changed.Columns[:2:2], changed.Columns[3:]...)
	r, err := m.Map(changed, []decoder.Value{text("2"), text("Order"), text("T"), text("{}")})
	if err == nil {
		t.Fatalf("Map after the key column was dropped = %+v, nil; want an error", r)
	}
	var rowErr *RowError
	if errors.As(err, &rowErr) {
		t.Errorf("schema change gave a *RowError: %v", err)
	}
	if !strings.Contains(err.Error(), `"aggregateid"`) || !strings.Contains(err.Error(), "public.outbox") {
		t.Errorf("error %q does not name the table and the missing column", err)
	}
	// The same broken relation keeps failing: it was not half-bound.
	if _, err := m.Map(changed, []decoder.Value{text("3"), text("Order"), text("T"), text("{}")}); err == nil {
		t.Error("second row of the broken relation mapped without error")
	}
}

func TestMapSchemaChangeMissingHeaderOrTemplateColumn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TopicTemplate = "{tenant}.{aggregatetype}"
	cfg.Headers = []HeaderColumn{{Column: "trace", Name: "traceparent"}}
	m := newMapper(t, cfg)
	rel := outboxRel(oidJSONB) // has neither tenant nor trace
	if err := m.Bind(rel); err == nil || !strings.Contains(err.Error(), `"tenant"`) {
		t.Errorf("Bind without the template column: %v, want an error naming tenant", err)
	}
	rel.Columns = append(rel.Columns, decoder.Column{Name: "tenant", TypeOID: oidText})
	if err := m.Bind(rel); err == nil || !strings.Contains(err.Error(), `"trace"`) {
		t.Errorf("Bind without the header column: %v, want an error naming trace", err)
	}
}

func TestMapRebindAfterAddingColumns(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Headers = []HeaderColumn{{Column: "type", Name: "eventType"}}
	m := newMapper(t, cfg)
	old := outboxRel(oidJSONB)
	mapOK(t, m, old, row(text("1"), text("Order"), text("k1"), text("Created"), text(`{"v":1}`)))

	// A new relation that adds columns and moves every mapped one.
	added := &decoder.Relation{ID: old.ID, Namespace: "public", Name: "outbox", Columns: []decoder.Column{
		{Name: "created_at", TypeOID: 1184},
		{Name: "payload", TypeOID: oidBytea},
		{Name: "type", TypeOID: oidText},
		{Name: "aggregateid", TypeOID: oidText},
		{Name: "tenant", TypeOID: oidText},
		{Name: "aggregatetype", TypeOID: oidText},
		{Name: "id", TypeOID: oidUUID},
	}}
	values := []decoder.Value{text("2024-01-01"), text(`\x7b7d`), text("Shipped"), text("k2"), text("acme"), text("Customer"), text("2")}
	r := mapOK(t, m, added, values)
	if r.Topic != "outbox.event.Customer" || string(r.Key) != "k2" || string(r.Value) != "{}" || string(r.ID) != "2" {
		t.Errorf("after rebind: Topic %q Key %q Value %q ID %q; want outbox.event.Customer k2 {} 2", r.Topic, r.Key, r.Value, r.ID)
	}
	if string(r.Headers[0].Value) != "2" || string(r.Headers[1].Value) != "Shipped" {
		t.Errorf("after rebind: headers %+v", r.Headers)
	}
}

// TestMapTopicCacheIsNotStale: topics are cached by rendered name; a cached name must
// never be served for a row that renders a different one, and a topic handed out
// must not change when later rows reuse the render buffer.
func TestMapTopicCacheIsNotStale(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TopicTemplate = "{aggregatetype}{aggregateid}"
	m := newMapper(t, cfg)
	rel := outboxRel(oidJSONB)
	var got []string
	for _, c := range [][2]string{{"Order", "1"}, {"Order", "2"}, {"Order", "1"}, {"Orde", "r1"}, {"Customer", "1"}, {"Order", "1"}} {
		r := mapOK(t, m, rel, row(text("e"), text(c[0]), text(c[1]), text("T"), text("{}")))
		if want := c[0] + c[1]; r.Topic != want {
			t.Errorf("row %q: Topic = %q, want %q", c, r.Topic, want)
		}
		got = append(got, r.Topic)
	}
	want := []string{"Order1", "Order2", "Order1", "Order1", "Customer1", "Order1"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("topic %d changed after later rows: %q, want %q", i, got[i], want[i])
		}
	}

	// Rebinding to a relation whose columns moved must render from the new positions.
	moved := outboxRel(oidJSONB)
	moved.Columns[1].Name, moved.Columns[2].Name = "aggregateid", "aggregatetype"
	r := mapOK(t, m, moved, row(text("e"), text("7"), text("Invoice"), text("T"), text("{}")))
	if r.Topic != "Invoice7" {
		t.Errorf("after columns moved: Topic = %q, want Invoice7", r.Topic)
	}
}

func TestMapTopicCacheIsBounded(t *testing.T) {
	m := newMapper(t, DefaultConfig())
	rel := outboxRel(oidJSONB)
	for i := 0; i < maxTopicCache+10; i++ {
		typ := fmt.Sprintf("T%d", i)
		r := mapOK(t, m, rel, row(text("e"), text(typ), text("k"), text("T"), text("{}")))
		if r.Topic != "outbox.event."+typ {
			t.Fatalf("row %d: Topic = %q", i, r.Topic)
		}
		if len(m.topics) > maxTopicCache {
			t.Fatalf("topic cache holds %d names, limit %d", len(m.topics), maxTopicCache)
		}
	}
}

// BenchmarkMap measures the default raw path (StringConverter bytes), which must not
// allocate; the JSON formats are measured beside it.
func BenchmarkMap(b *testing.B) {
	raw := DefaultConfig()
	raw.Headers = []HeaderColumn{{Column: "type", Name: "eventType"}}
	envelope := raw
	envelope.KeyFormat, envelope.ValueFormat, envelope.HeaderFormat = FormatJSONEnvelope, FormatJSONEnvelope, FormatJSONEnvelope
	expand := raw
	expand.ValueFormat, expand.ExpandJSONPayload = FormatJSON, true
	const jsonPayload = `{"orderId": 42, "items": [{"sku": "A-1", "qty": 2}], "total": "19.99"}`
	for _, c := range []struct {
		name    string
		cfg     Config
		oid     uint32
		payload string
	}{
		{"jsonb", raw, oidJSONB, jsonPayload},
		{"bytea", raw, oidBytea, `\x` + strings.Repeat("0123456789abcdef", 16)},
		{"json-envelope", envelope, oidJSONB, jsonPayload},
		{"expand", expand, oidJSONB, jsonPayload},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := newMapper(b, c.cfg)
			rel := outboxRel(c.oid)
			values := row(text("8d1f2c1e-4a0b-4c55-9d47-0d3c2d9e6b11"), text("Order"), text("42"), text("OrderCreated"), text(c.payload))
			if _, err := m.Map(rel, values); err != nil { // warm the binding and the topic cache
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Map(rel, values); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
