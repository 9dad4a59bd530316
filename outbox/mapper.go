package outbox

import (
	"fmt"

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
	Topic   string
	Key     []byte // nil is a null key
	Value   []byte // nil is a null value (a tombstone)
	ID      []byte
	Headers []Header // "id" first, then the configured header columns
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

// Mapper turns inserted rows of the outbox table into records. It remembers the
// relation it was bound to and rebinds when PostgreSQL sends a new Relation message
// (a schema change), so a dropped or retyped column is reported on the first row
// that needs it rather than producing a wrong record.
type Mapper struct {
	cfg      Config
	tpl      template
	rel      *decoder.Relation
	id       int
	key      int
	payload  int
	bytea    bool // payload is bytea: decode the hex text form to raw bytes
	tplCols  []int
	hdrCols  []int
	hdrBytea []bool
	topics   map[string]string
	buf      []byte
	scratch  []byte
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
	tpl, err := parseTemplate(cfg.Topic())
	if err != nil {
		return nil, err
	}
	m := &Mapper{cfg: cfg, tpl: tpl, topics: map[string]string{}}
	m.rec.Headers = make([]Header, 1+len(cfg.Headers))
	m.rec.Headers[0].Key = "id"
	for i, h := range cfg.Headers {
		m.rec.Headers[i+1].Key = h.Name
	}
	return m, nil
}

// Matches reports whether rel is the configured outbox table.
func (m *Mapper) Matches(rel *decoder.Relation) bool {
	schema, name, _ := SplitTable(m.cfg.Table)
	return rel.Namespace == schema && rel.Name == name
}

// Bind resolves the configured columns in rel. It is called by Map when the relation
// changes and may be called directly to check a relation up front.
func (m *Mapper) Bind(rel *decoder.Relation) error {
	m.rel = nil // until every column resolved: a failed Bind must not leave half a binding
	col := func(name, what string) (int, error) {
		i := rel.Column(name)
		if i < 0 {
			return -1, fmt.Errorf("table %s has no %s column %q (set it with the matching --*-column flag)", rel.QualifiedName(), what, name)
		}
		return i, nil
	}
	var err error
	if m.id, err = col(m.cfg.IDColumn, "id"); err != nil {
		return err
	}
	if m.key, err = col(m.cfg.KeyColumn, "key"); err != nil {
		return err
	}
	if m.payload, err = col(m.cfg.PayloadColumn, "payload"); err != nil {
		return err
	}
	switch oid := rel.Columns[m.payload].TypeOID; {
	case oid == oidJSON, oid == oidJSONB, oid == oidText, oid == oidVarchar, oid == oidBPChar, oid >= firstUserOID:
		m.bytea = false
	case oid == oidBytea:
		m.bytea = true
	default:
		return fmt.Errorf("payload column %q of %s has type oid %d; supported: jsonb, json, text, varchar, bytea", m.cfg.PayloadColumn, rel.QualifiedName(), oid)
	}
	m.tplCols = m.tplCols[:0]
	for _, p := range m.tpl {
		if p.column == "" {
			m.tplCols = append(m.tplCols, -1)
			continue
		}
		i, err := col(p.column, "topic template")
		if err != nil {
			return err
		}
		m.tplCols = append(m.tplCols, i)
	}
	m.hdrCols = m.hdrCols[:0]
	m.hdrBytea = m.hdrBytea[:0]
	for _, h := range m.cfg.Headers {
		i, err := col(h.Column, "header")
		if err != nil {
			return err
		}
		m.hdrCols = append(m.hdrCols, i)
		m.hdrBytea = append(m.hdrBytea, rel.Columns[i].TypeOID == oidBytea)
	}
	m.rel = rel
	clear(m.topics)
	return nil
}

// Map builds the record for one inserted row of rel. A *RowError means the row itself
// cannot be published; any other error means the table no longer matches the mapping.
func (m *Mapper) Map(rel *decoder.Relation, values []decoder.Value) (*Record, error) {
	r, err := m.mapRow(rel, values)
	if rowErr, ok := err.(*RowError); ok {
		rowErr.Key = copyValue(values[m.key])
		rowErr.Payload = copyValue(values[m.payload])
		if rowErr.Topic == "" {
			rowErr.Topic = m.rowTopic(values)
		}
	}
	return r, err
}

// rowTopic is the topic the template names for a row, valid or not, for error
// messages and dead-letter records; "" when a template column is NULL or unusable.
func (m *Mapper) rowTopic(values []decoder.Value) string {
	var b []byte
	for i, p := range m.tpl {
		if p.column == "" {
			b = append(b, p.literal...)
			continue
		}
		v := values[m.tplCols[i]]
		if v.Kind == 'n' || plain(v, p.column) != nil {
			return ""
		}
		b = append(b, v.Data...)
	}
	return string(b)
}

func copyValue(v decoder.Value) []byte {
	if v.Kind == 'n' {
		return nil
	}
	return append([]byte{}, v.Data...)
}

func (m *Mapper) mapRow(rel *decoder.Relation, values []decoder.Value) (*Record, error) {
	if rel != m.rel {
		if err := m.Bind(rel); err != nil {
			return nil, err
		}
	}
	if len(values) != len(rel.Columns) {
		return nil, fmt.Errorf("row of %s has %d values for %d columns", rel.QualifiedName(), len(values), len(rel.Columns))
	}
	r := &m.rec
	r.ID, r.Topic = nil, ""

	id := values[m.id]
	if id.Kind == 'n' {
		return nil, &RowError{Reason: fmt.Sprintf("id column %q is NULL; consumers dedupe on it", m.cfg.IDColumn)}
	}
	if err := plain(id, m.cfg.IDColumn); err != nil {
		return nil, &RowError{Reason: err.Error()}
	}
	r.ID = id.Data
	r.Headers[0].Value = id.Data

	topic, err := m.topic(values)
	if err != nil {
		return nil, &RowError{ID: string(r.ID), Reason: err.Error()}
	}
	r.Topic = topic

	key := values[m.key]
	switch key.Kind {
	case 'n':
		r.Key = nil
	default:
		if err := plain(key, m.cfg.KeyColumn); err != nil {
			return nil, m.rowError(err)
		}
		r.Key = nonNil(key.Data)
	}

	m.scratch = m.scratch[:0]
	payload := values[m.payload]
	switch {
	case payload.Kind == 'n':
		r.Value = nil
	case m.bytea:
		if r.Value, err = m.decodeBytea(payload, m.cfg.PayloadColumn); err != nil {
			return nil, m.rowError(err)
		}
	default:
		if err := plain(payload, m.cfg.PayloadColumn); err != nil {
			return nil, m.rowError(err)
		}
		r.Value = nonNil(payload.Data)
	}

	for i, c := range m.hdrCols {
		v := values[c]
		h := &r.Headers[i+1]
		switch {
		case v.Kind == 'n':
			h.Value = nil
		case m.hdrBytea[i]:
			if h.Value, err = m.decodeBytea(v, m.cfg.Headers[i].Column); err != nil {
				return nil, m.rowError(err)
			}
		default:
			if err := plain(v, m.cfg.Headers[i].Column); err != nil {
				return nil, m.rowError(err)
			}
			h.Value = nonNil(v.Data)
		}
	}
	return r, nil
}

func (m *Mapper) rowError(err error) *RowError {
	return &RowError{ID: string(m.rec.ID), Topic: m.rec.Topic, Reason: err.Error()}
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
	return nonNil(m.scratch[start:len(m.scratch):len(m.scratch)]), nil
}

// topic renders the template for one row, caching rendered names by their
// placeholder values so the common case allocates nothing.
func (m *Mapper) topic(values []decoder.Value) (string, error) {
	m.buf = m.buf[:0]
	for i, p := range m.tpl {
		if p.column == "" {
			m.buf = append(m.buf, p.literal...)
			continue
		}
		v := values[m.tplCols[i]]
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
	if len(m.topics) >= maxTopicCache {
		clear(m.topics)
	}
	m.topics[t] = t
	return t, nil
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
