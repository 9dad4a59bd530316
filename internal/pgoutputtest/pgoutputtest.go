// Package pgoutputtest builds pgoutput messages the way PostgreSQL's proto.c writes
// them (logicalrep_write_*, not streaming), so that tests of the decoder and of the
// relay do not depend on the decoder they check.
package pgoutputtest

import (
	"encoding/binary"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a WAL position.
type LSN = pglogrepl.LSN

// Column is one column of a Relation message.
type Column struct {
	Key     bool
	Name    string
	TypeOID uint32
	TypeMod int32
}

// Relation is a Relation message's content.
type Relation struct {
	ID              uint32
	Namespace, Name string
	ReplicaIdentity byte
	Columns         []Column
}

// Value is one column of a tuple: Kind 't' text, 'b' binary, 'n' NULL, 'u'
// unchanged TOAST.
type Value struct {
	Kind byte
	Data []byte
}

// Text, Binary, Null and Unchanged make tuple values.
func Text(s string) Value   { return Value{Kind: 't', Data: []byte(s)} }
func Binary(p []byte) Value { return Value{Kind: 'b', Data: p} }
func Null() Value           { return Value{Kind: 'n'} }
func Unchanged() Value      { return Value{Kind: 'u'} }

// Enc appends the message fields in network byte order.
type Enc struct{ B []byte }

func (e *Enc) U8(v byte) *Enc    { e.B = append(e.B, v); return e }
func (e *Enc) U16(v uint16) *Enc { e.B = binary.BigEndian.AppendUint16(e.B, v); return e }
func (e *Enc) U32(v uint32) *Enc { e.B = binary.BigEndian.AppendUint32(e.B, v); return e }
func (e *Enc) U64(v uint64) *Enc { e.B = binary.BigEndian.AppendUint64(e.B, v); return e }
func (e *Enc) Str(s string) *Enc { e.B = append(append(e.B, s...), 0); return e }
func (e *Enc) Raw(p []byte) *Enc { e.B = append(e.B, p...); return e }

// Time appends t as microseconds since 2000-01-01, PostgreSQL's epoch.
func (e *Enc) Time(t time.Time) *Enc {
	return e.U64(uint64(t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
}

// Tuple appends TupleData.
func (e *Enc) Tuple(vals []Value) *Enc {
	e.U16(uint16(len(vals)))
	for _, v := range vals {
		e.U8(v.Kind)
		if v.Kind == 't' || v.Kind == 'b' {
			e.U32(uint32(len(v.Data))).Raw(v.Data)
		}
	}
	return e
}

// Begin is a Begin message.
func Begin(final LSN, commitTime time.Time, xid uint32) []byte {
	return new(Enc).U8('B').U64(uint64(final)).Time(commitTime).U32(xid).B
}

// Commit is a Commit message.
func Commit(commit, end LSN, commitTime time.Time) []byte {
	return new(Enc).U8('C').U8(0).U64(uint64(commit)).U64(uint64(end)).Time(commitTime).B
}

// Origin is an Origin message.
func Origin(lsn LSN, name string) []byte {
	return new(Enc).U8('O').U64(uint64(lsn)).Str(name).B
}

// RelationMsg writes rel; an empty Namespace is written as is, the way proto.c
// abbreviates pg_catalog.
func RelationMsg(rel Relation) []byte {
	e := new(Enc).U8('R').U32(rel.ID).Str(rel.Namespace).Str(rel.Name).U8(rel.ReplicaIdentity)
	e.U16(uint16(len(rel.Columns)))
	for _, c := range rel.Columns {
		var flags byte
		if c.Key {
			flags = 1
		}
		e.U8(flags).Str(c.Name).U32(c.TypeOID).U32(uint32(c.TypeMod))
	}
	return e.B
}

// Type is a Type message.
func Type(oid uint32, namespace, name string) []byte {
	return new(Enc).U8('Y').U32(oid).Str(namespace).Str(name).B
}

// Insert is an Insert message.
func Insert(relID uint32, vals ...Value) []byte {
	return new(Enc).U8('I').U32(relID).U8('N').Tuple(vals).B
}

// Update writes an update; oldTag 0 means no old tuple.
func Update(relID uint32, oldTag byte, old, vals []Value) []byte {
	e := new(Enc).U8('U').U32(relID)
	if oldTag != 0 {
		e.U8(oldTag).Tuple(old)
	}
	return e.U8('N').Tuple(vals).B
}

// Delete is a Delete message.
func Delete(relID uint32, oldTag byte, old []Value) []byte {
	return new(Enc).U8('D').U32(relID).U8(oldTag).Tuple(old).B
}

// Truncate is a Truncate message.
func Truncate(options byte, ids ...uint32) []byte {
	e := new(Enc).U8('T').U32(uint32(len(ids))).U8(options)
	for _, id := range ids {
		e.U32(id)
	}
	return e.B
}

// Logical is a logical decoding message (pg_logical_emit_message).
func Logical(transactional bool, lsn LSN, prefix string, content []byte) []byte {
	var flags byte
	if transactional {
		flags = 1
	}
	return new(Enc).U8('M').U8(flags).U64(uint64(lsn)).Str(prefix).U32(uint32(len(content))).Raw(content).B
}

// Outbox is the Debezium-style outbox table: id uuid, aggregatetype, aggregateid,
// type text, payload jsonb.
func Outbox(id uint32) Relation {
	return Relation{
		ID: id, Namespace: "public", Name: "outbox", ReplicaIdentity: 'd',
		Columns: []Column{
			{Key: true, Name: "id", TypeOID: 2950, TypeMod: -1},
			{Name: "aggregatetype", TypeOID: 25, TypeMod: -1},
			{Name: "aggregateid", TypeOID: 25, TypeMod: -1},
			{Name: "type", TypeOID: 25, TypeMod: -1},
			{Name: "payload", TypeOID: 3802, TypeMod: -1},
		},
	}
}
