package outbox

import (
	"fmt"
	"strconv"
	"time"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// Type OIDs of the payload types a mapping accepts (pg_type.dat).
const (
	oidBytea   = 17
	oidText    = 25
	oidJSON    = 114
	oidBPChar  = 1042
	oidVarchar = 1043
	oidJSONB   = 3802
	// firstUserOID is where user-defined types (domains over text or jsonb, for example)
	// start; their text form is passed through like text.
	firstUserOID = 16384
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one outbox row ready for Kafka. Its byte slices alias the decoded message
// and the mapper's scratch space: valid until the next Map call.
type Record struct {
	Topic string
	// Partition is the partition to produce to, from a "partition" additional field;
	// -1 lets the producer's partitioner choose from the key.
	Partition int32
	Key       []byte // nil is a null key
	Value     []byte // nil is a null value (a tombstone)
	ID        []byte // the event id's text, whatever the header format
	Headers   []Header
	// Timestamp is the record timestamp from the timestamp column; zero means the
	// transaction's commit time.
	Timestamp time.Time
}

// RowError says why one row cannot become a Kafka record. It is the row's fault, not
// pgoutbox's: the caller's error policy decides whether to stop or dead-letter it.
type RowError struct {
	ID     string // event id, if it could be read
	Topic  string // target topic, if it could be built
	Reason string
	// Key and Payload are copies of the row's key and payload in their stored text
	// form (nil if NULL), for a dead-letter record.
	Key     []byte
	Payload []byte
}

func (e *RowError) Error() string {
	id, topic := e.ID, e.Topic
	if id == "" {
		id = "?"
	}
	if topic == "" {
		topic = "?"
	}
	return fmt.Sprintf("event id=%s topic=%s: %s", id, topic, e.Reason)
}

// ColumnInfo is what the catalog knows of a column and a Relation message does not.
type ColumnInfo struct {
	Name    string
	NotNull bool // pg_attribute.attnotnull: the json-envelope schema says "optional":false
}

// Mapper turns inserted rows of the outbox tables into records. It keeps one binding
// per table and rebinds when PostgreSQL sends a new Relation message (a schema
// change), so a dropped or retyped column is reported on the first row that needs it
// rather than producing a wrong record.
type Mapper struct {
	cfg      Config
	rawKey   bool // the formats, decided once: the raw path is the hot one
	rawValue bool
	rawHdr   bool
	tpl      template
	router   *router
	tables   [][2]string             // schema, name
	columns  map[string][]ColumnInfo // catalog facts by "schema.table"
	bindings []*binding
	cur      *binding // the binding of the last row
	topics   map[string]string
	buf      []byte
	scratch  []byte
	tmp      []byte
	rec      Record
}

// maxTopicCache bounds the topic cache; a template over a high-cardinality column
// would otherwise grow it without limit.
const maxTopicCache = 4096

// NewMapper validates cfg and returns a mapper.
func NewMapper(cfg Config) (*Mapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, f := range []*Format{&cfg.KeyFormat, &cfg.ValueFormat, &cfg.HeaderFormat} {
		*f, _ = ParseFormat(string(*f))
	}
	if cfg.MissingFields == "" {
		cfg.MissingFields = MissingError
	}
	if cfg.JSONPayloadNulls == "" {
		cfg.JSONPayloadNulls = NullIgnore
	}
	if cfg.InvalidOp == "" {
		cfg.InvalidOp = OpWarn
	}
	m := &Mapper{cfg: cfg, topics: map[string]string{}, columns: map[string][]ColumnInfo{},
		rawKey: cfg.KeyFormat.raw(), rawValue: cfg.ValueFormat.raw(), rawHdr: cfg.HeaderFormat.raw()}
	var err error
	if cfg.routed() {
		if m.router, err = newRouter(cfg.route()); err != nil {
			return nil, err
		}
	} else if m.tpl, err = cfg.template(); err != nil {
		return nil, err
	}
	for _, t := range cfg.Tables {
		schema, name, _ := SplitTable(t)
		m.tables = append(m.tables, [2]string{schema, name})
	}
	return m, nil
}

// Config returns the mapper's configuration with defaults filled in.
func (m *Mapper) Config() Config { return m.cfg }

// Matches reports whether rel is one of the configured outbox tables.
func (m *Mapper) Matches(rel *decoder.Relation) bool {
	for _, t := range m.tables {
		if rel.Namespace == t[0] && rel.Name == t[1] {
			return true
		}
	}
	return false
}

// SetColumns gives the mapper the catalog's facts about table's columns ("schema.table").
// Call it before streaming and again after a Relation message announced a schema change,
// as Debezium re-reads the catalog on every Relation message
// (PgOutputMessageDecoder.handleRelationMessage). A column the catalog did not report is
// taken as nullable, as Debezium does ("optionality could not be determined, defaulting
// to true", PgOutputMessageDecoder.java:378-384). Only json-envelope schemas use it.
func (m *Mapper) SetColumns(table string, cols []ColumnInfo) {
	schema, name, err := SplitTable(table)
	if err != nil {
		return
	}
	m.columns[schema+"."+name] = append([]ColumnInfo(nil), cols...)
	for _, b := range m.bindings {
		if b.rel != nil && b.rel.Namespace == schema && b.rel.Name == name {
			b.rel = nil // rebind with the new facts on the next row
		}
	}
	m.cur = nil
}

// Bind resolves the configured columns in rel. It is called by Map when the relation
// changes and may be called directly to check a relation up front.
func (m *Mapper) Bind(rel *decoder.Relation) error {
	_, err := m.bind(rel)
	return err
}

func (m *Mapper) bind(rel *decoder.Relation) (*binding, error) {
	slot := -1
	for i, b := range m.bindings {
		if b.schema == rel.Namespace && b.table == rel.Name {
			slot = i
			break
		}
	}
	b, err := m.newBinding(rel)
	if err != nil {
		if slot >= 0 { // a failed Bind must not leave the old binding in use
			m.bindings = append(m.bindings[:slot], m.bindings[slot+1:]...)
		}
		m.cur = nil
		return nil, err
	}
	if slot >= 0 {
		m.bindings[slot] = b
	} else {
		m.bindings = append(m.bindings, b)
	}
	clear(m.topics)
	m.cur = b
	return b, nil
}

// lookup returns the binding for rel, binding it when rel is new.
func (m *Mapper) lookup(rel *decoder.Relation) (*binding, error) {
	if m.cur != nil && m.cur.rel == rel {
		return m.cur, nil
	}
	for _, b := range m.bindings {
		if b.rel == rel {
			m.cur = b
			return b, nil
		}
	}
	return m.bind(rel)
}

// Map builds the record for one inserted row of rel. A *RowError means the row itself
// cannot be published; any other error means the table no longer matches the mapping.
func (m *Mapper) Map(rel *decoder.Relation, values []decoder.Value) (*Record, error) {
	b, err := m.lookup(rel)
	if err != nil {
		return nil, err
	}
	if len(values) != len(rel.Columns) {
		return nil, fmt.Errorf("row of %s has %d values for %d columns", rel.QualifiedName(), len(values), len(rel.Columns))
	}
	r, err := m.mapRow(b, values)
	if rowErr, ok := err.(*RowError); ok {
		rowErr.Key = copyValue(values[b.key])
		rowErr.Payload = copyValue(values[b.payload])
		if rowErr.Topic == "" {
			rowErr.Topic = m.rowTopic(b, values)
		}
	}
	return r, err
}

// rowTopic is the topic the template names for a row, valid or not, for error
// messages and dead-letter records; "" when a template column is NULL or unusable.
func (m *Mapper) rowTopic(b *binding, values []decoder.Value) string {
	if m.router != nil {
		v := values[b.route]
		if v.Kind == 'n' || plain(v, m.cfg.AggregateTypeColumn) != nil {
			return ""
		}
		return string(m.router.route(nil, v.Data))
	}
	var out []byte
	for i, p := range m.tpl {
		if p.column == "" {
			out = append(out, p.literal...)
			continue
		}
		v := values[b.tplCols[i]]
		if v.Kind == 'n' || plain(v, p.column) != nil {
			return ""
		}
		out = append(out, v.Data...)
	}
	return string(out)
}

func copyValue(v decoder.Value) []byte {
	if v.Kind == 'n' {
		return nil
	}
	return append([]byte{}, v.Data...)
}

func (m *Mapper) mapRow(b *binding, values []decoder.Value) (*Record, error) {
	r := &m.rec
	r.ID, r.Topic, r.Partition, r.Timestamp = nil, "", -1, time.Time{}
	m.scratch = m.scratch[:0]

	id := values[b.id]
	if id.Kind == 'n' {
		return nil, &RowError{Reason: fmt.Sprintf("id column %q is NULL; consumers dedupe on it", m.cfg.IDColumn)}
	}
	if err := plain(id, m.cfg.IDColumn); err != nil {
		return nil, &RowError{Reason: err.Error()}
	}
	r.ID = id.Data

	topic, err := m.topic(b, values)
	if err != nil {
		return nil, &RowError{ID: string(r.ID), Reason: err.Error()}
	}
	r.Topic = topic

	// The raw format of text columns is the hot path: inline, without calls.
	if k := values[b.key]; m.rawKey && k.Kind == 't' {
		r.Key = nonNil(k.Data)
	} else if r.Key, err = m.key(b, k); err != nil {
		return nil, m.rowError(err)
	}
	if v := values[b.payload]; m.rawValue && v.Kind == 't' && !b.payloadBytea && !m.cfg.TombstoneOnEmptyPayload {
		r.Value = nonNil(v.Data)
	} else if r.Value, err = m.value(b, values); err != nil {
		return nil, m.rowError(err)
	}

	// The binding's header slice has the keys already; only the values change.
	hdrs := b.hdrs
	if m.rawHdr && id.Kind == 't' {
		hdrs[0].Value = nonNil(id.Data)
	} else if hdrs[0].Value, err = m.header(&b.idHeader, id); err != nil {
		return nil, m.rowError(err)
	}
	for i := range b.headers {
		h := &b.headers[i]
		if v := values[h.col]; m.rawHdr && v.Kind == 't' && !h.bytea {
			hdrs[i+1].Value = nonNil(v.Data)
		} else if hdrs[i+1].Value, err = m.header(h, v); err != nil {
			return nil, m.rowError(err)
		}
	}
	r.Headers = hdrs

	if b.partition >= 0 {
		if r.Partition, err = partition(values[b.partition], b.partitionName); err != nil {
			return nil, m.rowError(err)
		}
	}
	if b.ts >= 0 {
		if r.Timestamp, err = eventTimestamp(values[b.ts], m.cfg.TimestampColumn, b.tsMillis); err != nil {
			return nil, m.rowError(err)
		}
	}
	return r, nil
}

func (m *Mapper) rowError(err error) *RowError {
	return &RowError{ID: string(m.rec.ID), Topic: m.rec.Topic, Reason: err.Error()}
}

// key builds the record key in the key format.
func (m *Mapper) key(b *binding, v decoder.Value) ([]byte, error) {
	if m.rawKey {
		if v.Kind == 'n' {
			return nil, nil
		}
		if err := plain(v, m.cfg.KeyColumn); err != nil {
			return nil, err
		}
		return nonNil(v.Data), nil
	}
	start := len(m.scratch)
	m.scratch = append(m.scratch, b.keyPrefix...)
	var err error
	if m.scratch, err = m.appendJSON(m.scratch, &b.keyType, v, m.cfg.KeyColumn); err != nil {
		return nil, err
	}
	if b.keyPrefix != nil {
		m.scratch = append(m.scratch, '}')
	}
	return m.taken(start), nil
}

// header builds one header value in the header format: raw is the column's text
// (a bytea's bytes), NULL a null header, as SimpleHeaderConverter returns null for a
// null value; json and json-envelope are JsonConverter.fromConnectHeader, which is
// fromConnectData (JsonConverter.java:311-313).
func (m *Mapper) header(h *hdrBinding, v decoder.Value) ([]byte, error) {
	if m.rawHdr {
		switch {
		case v.Kind == 'n':
			return nil, nil
		case h.bytea:
			return m.decodeBytea(v, h.column)
		}
		if err := plain(v, h.column); err != nil {
			return nil, err
		}
		return nonNil(v.Data), nil
	}
	start := len(m.scratch)
	m.scratch = append(m.scratch, h.prefix...)
	var err error
	if m.scratch, err = m.appendJSON(m.scratch, &h.typ, v, h.column); err != nil {
		return nil, err
	}
	if h.prefix != nil {
		m.scratch = append(m.scratch, '}')
	}
	return m.taken(start), nil
}

// taken returns scratch[start:] capped, so later appends cannot write into it.
func (m *Mapper) taken(start int) []byte {
	return nonNil(m.scratch[start:len(m.scratch):len(m.scratch)])
}

// appendJSON appends a column value as JSON: "null" for NULL (JsonConverter writes a
// NullNode for a null value of an optional schema, JsonConverter.java:584-591).
func (m *Mapper) appendJSON(dst []byte, t *colType, v decoder.Value, column string) ([]byte, error) {
	if v.Kind == 'n' {
		return append(dst, "null"...), nil
	}
	var bin []byte
	if t.kind == kindBytes {
		if v.Kind == 'b' {
			bin = v.Data
		} else {
			if err := plain(v, column); err != nil {
				return dst, err
			}
			var err error
			if m.tmp, err = decoder.AppendBytea(m.tmp[:0], v.Data); err != nil {
				return dst, fmt.Errorf("column %q: %w", column, err)
			}
			bin = m.tmp
		}
	} else if err := plain(v, column); err != nil {
		return dst, err
	} else if v.Kind == 'b' {
		return dst, fmt.Errorf("column %q arrived in binary form, which pgoutbox cannot write as JSON", column)
	}
	out, err := appendValueJSON(dst, t, v.Data, bin)
	if err != nil {
		return dst, fmt.Errorf("column %q: %w", column, err)
	}
	return out, nil
}

// decodeBytea appends the raw bytes of v to the scratch buffer and returns them.
func (m *Mapper) decodeBytea(v decoder.Value, column string) ([]byte, error) {
	if v.Kind == 'b' {
		return nonNil(v.Data), nil
	}
	if err := plain(v, column); err != nil {
		return nil, err
	}
	start := len(m.scratch)
	out, err := decoder.AppendBytea(m.scratch, v.Data)
	if err != nil {
		return nil, fmt.Errorf("column %q: %w", column, err)
	}
	m.scratch = out
	return m.taken(start), nil
}

// topic renders the template (or routes the route column's value) for one row,
// caching rendered names by their inputs so the common case allocates nothing.
func (m *Mapper) topic(b *binding, values []decoder.Value) (string, error) {
	m.buf = m.buf[:0]
	if m.router != nil {
		v := values[b.route]
		if v.Kind == 'n' {
			return "", fmt.Errorf("route column %q is NULL", m.cfg.AggregateTypeColumn)
		}
		if err := plain(v, m.cfg.AggregateTypeColumn); err != nil {
			return "", err
		}
		if t, ok := m.topics[string(v.Data)]; ok {
			return t, nil
		}
		t := string(m.router.route(m.buf, v.Data))
		if err := ValidTopic(t); err != nil {
			return "", err
		}
		m.cacheTopic(string(v.Data), t)
		return t, nil
	}
	for i, p := range m.tpl {
		if p.column == "" {
			m.buf = append(m.buf, p.literal...)
			continue
		}
		v := values[b.tplCols[i]]
		if v.Kind == 'n' {
			return "", fmt.Errorf("topic template column %q is NULL", p.column)
		}
		if err := plain(v, p.column); err != nil {
			return "", err
		}
		m.buf = append(m.buf, v.Data...)
	}
	if t, ok := m.topics[string(m.buf)]; ok {
		return t, nil
	}
	t := string(m.buf)
	if err := ValidTopic(t); err != nil {
		return "", err
	}
	m.cacheTopic(t, t)
	return t, nil
}

func (m *Mapper) cacheTopic(key, topic string) {
	if len(m.topics) >= maxTopicCache {
		clear(m.topics)
	}
	m.topics[key] = topic
}

// partition reads a "partition" additional field. Debezium reads it with
// Struct.getInt32 (EventRouterDelegate.java:209-210): NULL leaves the choice to the
// partitioner.
func partition(v decoder.Value, column string) (int32, error) {
	if v.Kind == 'n' {
		return -1, nil
	}
	if err := plain(v, column); err != nil {
		return -1, err
	}
	n, err := strconv.ParseInt(string(v.Data), 10, 32)
	if err != nil || n < 0 {
		return -1, fmt.Errorf("partition column %q holds %q, not a partition number", column, v.Data)
	}
	return int32(n), nil
}

// eventTimestamp reads table.field.event.timestamp as Debezium's getEventTimestampMs
// does (EventRouterDelegate.java:253-285): NULL falls back (to the commit time here,
// to Debezium's processing time there); a MicroTimestamp is divided by 1000 (Java's
// division, towards zero), a millisecond Timestamp taken as it is.
func eventTimestamp(v decoder.Value, column string, millis bool) (time.Time, error) {
	if v.Kind == 'n' {
		return time.Time{}, nil
	}
	if err := plain(v, column); err != nil {
		return time.Time{}, err
	}
	ts, err := parseTimestamp(v.Data)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp column %q: %w", column, err)
	}
	if millis {
		return time.UnixMilli(ts.UnixMilli()), nil
	}
	return time.UnixMilli(ts.UnixMicro() / 1000), nil
}

// plain rejects value kinds an inserted row must not carry.
func plain(v decoder.Value, column string) error {
	switch v.Kind {
	case 't', 'b':
		return nil
	case 'u':
		return fmt.Errorf("column %q arrived as an unchanged TOAST value, which an insert cannot have", column)
	}
	return fmt.Errorf("column %q has unknown value kind %q", column, v.Kind)
}

// nonNil keeps an empty value distinct from NULL: Kafka tells a zero-length value
// from a null one, and so must we.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
