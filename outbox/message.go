package outbox

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// MessageMapper maps logical decoding messages (pg_logical_emit_message) to records,
// for a tableless outbox. A message's content is a JSON object whose fields play the
// role of the outbox table's columns, under the same names:
//
//	SELECT pg_logical_emit_message(true, 'outbox',
//	  '{"id":"…","aggregatetype":"order","aggregateid":"42","type":"OrderPaid","payload":{"total":10}}');
//
// A string field is used as its text; any other JSON value as its JSON text, so an
// object payload is published as JSON. A missing field is NULL.
type MessageMapper struct {
	m      *Mapper
	rel    *decoder.Relation
	values []decoder.Value
	fields map[string]json.RawMessage
	bufs   [][]byte
}

// NewMessageMapper builds a mapper for messages with the columns of cfg.
func NewMessageMapper(cfg Config) (*MessageMapper, error) {
	cols, err := cfg.Columns()
	if err != nil {
		return nil, err
	}
	if len(cfg.Tables) == 0 {
		cfg.Tables = []string{"message.outbox"}
	}
	m, err := NewMapper(cfg)
	if err != nil {
		return nil, err
	}
	rel := &decoder.Relation{Namespace: "message", Name: "outbox"}
	for _, c := range cols {
		oid := uint32(oidText)
		if c == cfg.PayloadColumn {
			oid = oidJSONB
		}
		rel.Columns = append(rel.Columns, decoder.Column{Name: c, TypeOID: oid})
	}
	if err := m.Bind(rel); err != nil {
		return nil, err
	}
	return &MessageMapper{m: m, rel: rel, values: make([]decoder.Value, len(cols)), bufs: make([][]byte, len(cols))}, nil
}

// Map builds the record for one message. The record aliases the mapper's buffers:
// valid until the next Map.
func (mm *MessageMapper) Map(content []byte) (*Record, error) {
	clear(mm.fields)
	if err := json.Unmarshal(content, &mm.fields); err != nil || mm.fields == nil {
		reason := "message content is not a JSON object"
		if err != nil {
			reason += ": " + err.Error()
		}
		return nil, &RowError{Reason: reason, Payload: append([]byte(nil), content...)}
	}
	for i, col := range mm.rel.Columns {
		raw, ok := mm.fields[col.Name]
		raw = bytes.TrimSpace(raw)
		if !ok || bytes.Equal(raw, []byte("null")) {
			mm.values[i] = decoder.Value{Kind: decoder.KindNull}
			continue
		}
		b := mm.bufs[i][:0]
		if len(raw) > 0 && raw[0] == '"' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, &RowError{Reason: fmt.Sprintf("field %q: %v", col.Name, err), Payload: append([]byte(nil), content...)}
			}
			b = append(b, s...)
		} else {
			b = append(b, raw...)
		}
		mm.bufs[i] = b
		mm.values[i] = decoder.Value{Kind: decoder.KindText, Data: nonNil(b)}
	}
	return mm.m.Map(mm.rel, mm.values)
}
