package outbox

import (
	"errors"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// errSchemalessEnvelope: an empty top-level JSON array leaves Debezium with a null payload
// schema, which its envelope schema cache cannot take (a NullPointerException fails the task).
var errSchemalessEnvelope = errors.New("expanded JSON payload is an empty array, which Debezium cannot put in an envelope with additional fields (its task fails)")

// value builds the record value in the value format, as EventRouterDelegate.apply
// builds it (EventRouterDelegate.java:162-230): the payload alone when no field is
// placed in the envelope, otherwise a struct of "payload" and the envelope fields; a
// tombstone for a NULL or blank payload with route.tombstone.on.empty.payload.
func (m *Mapper) value(b *binding, values []decoder.Value) ([]byte, error) {
	c := &m.cfg
	v := values[b.payload]
	if v.Kind != 'n' {
		if err := plain(v, c.PayloadColumn); err != nil {
			return nil, err
		}
	}
	if m.rawValue {
		switch {
		case v.Kind == 'n':
			return nil, nil
		case b.payloadBytea:
			return m.decodeBytea(v, c.PayloadColumn)
		case c.TombstoneOnEmptyPayload && javaBlank(v.Data):
			return nil, nil
		}
		return nonNil(v.Data), nil
	}

	ps := &b.payloadType.schema
	var node *jnode
	outcome := expandKept
	// Only a string payload is expanded; a bytea is a byte[] (EventRouterDelegate.java:163-178).
	if c.ExpandJSONPayload && v.Kind == 't' && !b.payloadBytea {
		s, n, oc, err := expandPayload(c.PayloadColumn, v.Data, c.JSONPayloadNulls)
		if err != nil {
			return nil, err
		}
		switch outcome = oc; oc {
		case expandDone:
			ps, node = s, n
		case expandSchemaless:
			ps = nil
		}
	}
	// isDeleteEvent: payload == null || payload.toString().trim().isEmpty()
	// (EventRouterDelegate.java:214); a byte[] or a Struct never prints empty.
	blank := v.Kind == 'n' || !b.payloadBytea && outcome != expandDone && javaBlank(v.Data)
	if blank && c.TombstoneOnEmptyPayload {
		return nil, nil // schema and value null: every converter writes null (JsonConverter.java:322-324)
	}

	start := len(m.scratch)
	envelope := c.ValueFormat == FormatJSONEnvelope
	var err error
	if len(b.envelope) == 0 {
		if envelope {
			switch {
			case outcome == expandKept:
				m.scratch = append(m.scratch, b.valuePrefix...)
			case ps == nil:
				m.scratch = append(m.scratch, `{"schema":null,"payload":`...)
			default:
				m.scratch = append(m.scratch, `{"schema":`...)
				m.scratch = appendSchemaJSON(m.scratch, ps)
				m.scratch = append(m.scratch, `,"payload":`...)
			}
		}
		if m.scratch, err = m.appendPayload(m.scratch, b, v, node, ps); err != nil {
			return nil, err
		}
		if envelope {
			m.scratch = append(m.scratch, '}')
		}
		return m.taken(start), nil
	}

	if outcome == expandSchemaless {
		return nil, errSchemalessEnvelope
	}
	if envelope {
		// The envelope struct's schema (EventRouterDelegate.getSchemaBuilder,
		// EventRouterDelegate.java:414-437): "payload" with the payload's schema, then the
		// envelope fields with their columns' schemas; named after the table and the
		// route value, versioned from table.field.event.schema.version.
		m.scratch = append(m.scratch, `{"schema":{"type":"struct","fields":[`...)
		m.scratch = appendFieldSchema(m.scratch, ps, envelopePayload)
		m.scratch = append(m.scratch, b.envFieldsJSON...)
		m.scratch = append(m.scratch, `],"optional":false,"name":`...)
		m.buf = append(m.buf[:0], b.valueNamePrefix...)
		if route := values[b.routeName]; route.Kind == 'n' {
			m.buf = append(m.buf, "null"...) // Java's string concatenation of null
		} else {
			m.buf = append(m.buf, route.Data...)
		}
		m.buf = append(m.buf, ".Value"...)
		m.scratch = appendJSONString(m.scratch, m.buf)
		if b.version >= 0 {
			if ver := values[b.version]; ver.Kind == 't' {
				m.scratch = append(m.scratch, `,"version":`...)
				m.scratch = append(m.scratch, ver.Data...)
			}
		}
		m.scratch = append(m.scratch, `},"payload":`...)
	}
	m.scratch = append(m.scratch, `{"payload":`...)
	if m.scratch, err = m.appendPayload(m.scratch, b, v, node, ps); err != nil {
		return nil, err
	}
	for i := range b.envelope {
		e := &b.envelope[i]
		m.scratch = append(m.scratch, ',')
		m.scratch = appendJSONString(m.scratch, e.alias)
		m.scratch = append(m.scratch, ':')
		if m.scratch, err = m.appendJSON(m.scratch, &e.typ, values[e.col], e.alias); err != nil {
			return nil, err
		}
	}
	m.scratch = append(m.scratch, '}')
	if envelope {
		m.scratch = append(m.scratch, '}')
	}
	return m.taken(start), nil
}

// appendPayload writes the payload's Connect value as JSON.
func (m *Mapper) appendPayload(dst []byte, b *binding, v decoder.Value, node *jnode, ps *schema) ([]byte, error) {
	switch {
	case node != nil:
		return appendExpanded(dst, ps, node)
	case ps == nil: // schemaless: JsonConverter infers a string (JsonConverter.java:602-605)
		return appendJSONString(dst, v.Data), nil
	}
	return m.appendJSON(dst, &b.payloadType, v, m.cfg.PayloadColumn)
}

// javaBlank is Java's s.trim().isEmpty(): trim removes every character up to U+0020.
func javaBlank(b []byte) bool {
	for _, c := range b {
		if c > ' ' {
			return false
		}
	}
	return true
}
