package outbox

import (
	"fmt"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// binding is the mapping resolved against one table's Relation: column positions,
// the Connect types of the columns a JSON format writes, and the parts of their
// json-envelope schemas that do not change from row to row.
type binding struct {
	rel           *decoder.Relation
	schema, table string

	id, key, payload int
	route            int // route column for the regex router; -1 otherwise
	routeName        int // route column naming a json-envelope struct; -1 otherwise
	ts               int // timestamp column; -1: none
	tsMillis         bool
	version          int // schema version column; -1: none
	partition        int // partition column; -1: none
	partitionName    string
	tplCols          []int

	payloadBytea bool
	keyType      colType
	payloadType  colType
	keyPrefix    []byte // json-envelope `{"schema":…,"payload":`; nil otherwise
	valuePrefix  []byte // the same for a value that is the payload alone

	idHeader hdrBinding
	headers  []hdrBinding
	hdrs     []Header // "id", then headers: the record's headers, keys set once
	envelope []envBinding
	// envFieldsJSON is the json-envelope schema of the envelope fields, each followed by
	// its "field" name, comma-led: `,{"type":…,"field":"alias"}…`.
	envFieldsJSON []byte
	// valueNamePrefix is "<topic.prefix>.<schema>.<table>.": Debezium names the envelope
	// schema after the table's value schema with the route value inserted before
	// ".Value" (EventRouterDelegate.getSchemaName, EventRouterDelegate.java:439-455).
	valueNamePrefix string
}

type hdrBinding struct {
	name   string
	column string
	col    int
	bytea  bool
	typ    colType
	prefix []byte // json-envelope `{"schema":…,"payload":`
}

type envBinding struct {
	alias string
	col   int
	typ   colType
}

// newBinding resolves the configuration in rel.
func (m *Mapper) newBinding(rel *decoder.Relation) (*binding, error) {
	c := &m.cfg
	b := &binding{rel: rel, schema: rel.Namespace, table: rel.Name, route: -1, routeName: -1, ts: -1, version: -1, partition: -1}
	col := func(name, what string) (int, error) {
		i := rel.Column(name)
		if i < 0 {
			return -1, fmt.Errorf("table %s has no %s column %q (set it with the matching --*-column flag)", rel.QualifiedName(), what, name)
		}
		return i, nil
	}
	notNull := map[string]bool{}
	for _, ci := range m.columns[rel.Namespace+"."+rel.Name] {
		notNull[ci.Name] = ci.NotNull
	}
	// typed returns the Connect type of column i, optional unless the catalog says NOT NULL.
	typed := func(i int) (colType, error) {
		t, err := connectType(rel.Columns[i])
		if err != nil {
			return t, err
		}
		t.schema.optional = !notNull[rel.Columns[i].Name]
		return t, nil
	}
	var err error
	if b.id, err = col(c.IDColumn, "id"); err != nil {
		return nil, err
	}
	if b.key, err = col(c.KeyColumn, "key"); err != nil {
		return nil, err
	}
	if b.payload, err = col(c.PayloadColumn, "payload"); err != nil {
		return nil, err
	}
	switch oid := rel.Columns[b.payload].TypeOID; {
	case oid == oidJSON, oid == oidJSONB, oid == oidText, oid == oidVarchar, oid == oidBPChar, oid >= firstUserOID:
	case oid == oidBytea:
		b.payloadBytea = true
	default:
		return nil, fmt.Errorf("payload column %q of %s has type oid %d; supported: jsonb, json, text, varchar, bytea", c.PayloadColumn, rel.QualifiedName(), oid)
	}
	if m.router != nil {
		if b.route, err = col(c.AggregateTypeColumn, "route"); err != nil {
			return nil, err
		}
	}
	for _, p := range m.tpl {
		if p.column == "" {
			b.tplCols = append(b.tplCols, -1)
			continue
		}
		i, err := col(p.column, "topic template")
		if err != nil {
			return nil, err
		}
		b.tplCols = append(b.tplCols, i)
	}

	if !c.KeyFormat.raw() {
		if b.keyType, err = typed(b.key); err != nil {
			return nil, fmt.Errorf("key of %s: %w", rel.QualifiedName(), err)
		}
		if c.KeyFormat == FormatJSONEnvelope {
			// Debezium's key schema is the key column's field schema
			// (EventRouterDelegate.defineRecordKeySchema, EventRouterDelegate.java:287-298).
			b.keyPrefix = envelopePrefix(&b.keyType.schema)
		}
	}
	if !c.ValueFormat.raw() {
		if b.payloadType, err = typed(b.payload); err != nil {
			return nil, fmt.Errorf("payload of %s: %w", rel.QualifiedName(), err)
		}
		if c.ValueFormat == FormatJSONEnvelope {
			b.valuePrefix = envelopePrefix(&b.payloadType.schema)
		}
	}

	// Headers: "id" with the id column's schema (EventRouterDelegate.java:159-160), then
	// the header columns and the header-placed additional fields, each with its column's
	// schema (EventRouterDelegate.java:203-208).
	header := func(name string, i int) (hdrBinding, error) {
		h := hdrBinding{name: name, column: rel.Columns[i].Name, col: i, bytea: rel.Columns[i].TypeOID == oidBytea}
		if !c.HeaderFormat.raw() {
			var err error
			if h.typ, err = typed(i); err != nil {
				return h, fmt.Errorf("header %q of %s: %w", name, rel.QualifiedName(), err)
			}
			if c.HeaderFormat == FormatJSONEnvelope {
				h.prefix = envelopePrefix(&h.typ.schema)
			}
		}
		return h, nil
	}
	if b.idHeader, err = header("id", b.id); err != nil {
		return nil, err
	}
	for _, hc := range c.Headers {
		i, err := col(hc.Column, "header")
		if err != nil {
			return nil, err
		}
		h, err := header(hc.Name, i)
		if err != nil {
			return nil, err
		}
		b.headers = append(b.headers, h)
	}
	for _, f := range c.Fields {
		i := rel.Column(f.Column)
		if i < 0 {
			if c.MissingFields == MissingIgnore { // EventRouterDelegate.java:193-196
				continue
			}
			return nil, fmt.Errorf("table %s has no column %q for the %s field (table.field.additional.missing=error)", rel.QualifiedName(), f.Column, f.Placement)
		}
		switch f.Placement {
		case PlaceHeader:
			h, err := header(f.name(), i)
			if err != nil {
				return nil, err
			}
			b.headers = append(b.headers, h)
		case PlaceEnvelope:
			t, err := typed(i)
			if err != nil {
				return nil, fmt.Errorf("envelope field %q of %s: %w", f.name(), rel.QualifiedName(), err)
			}
			b.envelope = append(b.envelope, envBinding{alias: f.name(), col: i, typ: t})
			b.envFieldsJSON = append(b.envFieldsJSON, ',')
			b.envFieldsJSON = appendFieldSchema(b.envFieldsJSON, &t.schema, f.name())
		case PlacePartition:
			if !isInteger(rel.Columns[i].TypeOID) {
				return nil, fmt.Errorf("partition column %q of %s has type oid %d; want an integer column", f.Column, rel.QualifiedName(), rel.Columns[i].TypeOID)
			}
			b.partition, b.partitionName = i, f.Column // the last one wins, as in Debezium
		}
	}
	b.hdrs = make([]Header, 1+len(b.headers))
	b.hdrs[0].Key = "id"
	for i, h := range b.headers {
		b.hdrs[i+1].Key = h.name
	}
	b.valueNamePrefix = c.TopicPrefix + "." + rel.Namespace + "." + rel.Name + "."
	if c.ValueFormat == FormatJSONEnvelope && len(b.envelope) > 0 {
		if b.routeName, err = col(c.AggregateTypeColumn, "route"); err != nil {
			return nil, err
		}
	}

	if c.TimestampColumn != "" {
		if b.ts, err = col(c.TimestampColumn, "timestamp"); err != nil {
			return nil, err
		}
		switch tc := rel.Columns[b.ts]; tc.TypeOID {
		case oidTimestamp:
			b.tsMillis = tc.TypeMod >= 0 && tc.TypeMod <= 3 // io.debezium.time.Timestamp
		case oidTimestampTZ:
			b.tsMillis = true
		default:
			return nil, fmt.Errorf("timestamp column %q of %s has type oid %d; want timestamp or timestamptz", c.TimestampColumn, rel.QualifiedName(), tc.TypeOID)
		}
	}
	if c.SchemaVersionColumn != "" {
		if b.version, err = col(c.SchemaVersionColumn, "schema version"); err != nil {
			return nil, err
		}
		if !isInteger(rel.Columns[b.version].TypeOID) {
			return nil, fmt.Errorf("schema version column %q of %s has type oid %d; want an integer column", c.SchemaVersionColumn, rel.QualifiedName(), rel.Columns[b.version].TypeOID)
		}
	}
	return b, nil
}

func isInteger(oid uint32) bool { return oid == oidInt2 || oid == oidInt4 || oid == oidInt8 }

// appendFieldSchema writes a struct field's schema: the field's own schema with its
// name appended as "field" (JsonConverter.java:418-421).
func appendFieldSchema(dst []byte, s *schema, name string) []byte {
	dst = appendSchemaJSON(dst, s)
	dst = append(dst[:len(dst)-1], `,"field":`...)
	dst = appendJSONString(dst, name)
	return append(dst, '}')
}
