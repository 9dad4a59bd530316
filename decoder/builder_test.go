package decoder

import (
	"encoding/binary"
	"time"
)

// enc builds pgoutput messages the way proto.c writes them (logicalrep_write_*
// with an invalid xid, i.e. not streaming), so tests do not depend on the
// decoder they check.
type enc struct{ b []byte }

func (e *enc) u8(v byte) *enc    { e.b = append(e.b, v); return e }
func (e *enc) u16(v uint16) *enc { e.b = binary.BigEndian.AppendUint16(e.b, v); return e }
func (e *enc) u32(v uint32) *enc { e.b = binary.BigEndian.AppendUint32(e.b, v); return e }
func (e *enc) u64(v uint64) *enc { e.b = binary.BigEndian.AppendUint64(e.b, v); return e }
func (e *enc) str(s string) *enc { e.b = append(append(e.b, s...), 0); return e }
func (e *enc) raw(p []byte) *enc { e.b = append(e.b, p...); return e }

func (e *enc) time(t time.Time) *enc {
	return e.u64(uint64(t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
}

func beginMsg(final LSN, commitTime time.Time, xid uint32) []byte {
	return new(enc).u8('B').u64(uint64(final)).time(commitTime).u32(xid).b
}

func commitMsg(commit, end LSN, commitTime time.Time) []byte {
	return new(enc).u8('C').u8(0).u64(uint64(commit)).u64(uint64(end)).time(commitTime).b
}

func originMsg(lsn LSN, name string) []byte {
	return new(enc).u8('O').u64(uint64(lsn)).str(name).b
}

// relationMsg writes rel; an empty Namespace is written as is, the way
// proto.c abbreviates pg_catalog.
func relationMsg(rel Relation) []byte {
	e := new(enc).u8('R').u32(rel.ID).str(rel.Namespace).str(rel.Name).u8(rel.ReplicaIdentity)
	e.u16(uint16(len(rel.Columns)))
	for _, c := range rel.Columns {
		var flags byte
		if c.Key {
			flags = 1
		}
		e.u8(flags).str(c.Name).u32(c.TypeOID).u32(uint32(c.TypeMod))
	}
	return e.b
}

func typeMsg(oid uint32, namespace, name string) []byte {
	return new(enc).u8('Y').u32(oid).str(namespace).str(name).b
}

func (e *enc) tuple(vals []Value) *enc {
	e.u16(uint16(len(vals)))
	for _, v := range vals {
		e.u8(v.Kind)
		if v.Kind == KindText || v.Kind == KindBinary {
			e.u32(uint32(len(v.Data))).raw(v.Data)
		}
	}
	return e
}

func insertMsg(relID uint32, vals ...Value) []byte {
	return new(enc).u8('I').u32(relID).u8('N').tuple(vals).b
}

// updateMsg writes an update; oldTag 0 means no old tuple.
func updateMsg(relID uint32, oldTag byte, old, vals []Value) []byte {
	e := new(enc).u8('U').u32(relID)
	if oldTag != 0 {
		e.u8(oldTag).tuple(old)
	}
	return e.u8('N').tuple(vals).b
}

func deleteMsg(relID uint32, oldTag byte, old []Value) []byte {
	return new(enc).u8('D').u32(relID).u8(oldTag).tuple(old).b
}

func truncateMsg(options byte, ids ...uint32) []byte {
	e := new(enc).u8('T').u32(uint32(len(ids))).u8(options)
	for _, id := range ids {
		e.u32(id)
	}
	return e.b
}

func logicalMsg(transactional bool, lsn LSN, prefix string, content []byte) []byte {
	var flags byte
	if transactional {
		flags = 1
	}
	return new(enc).u8('M').u8(flags).u64(uint64(lsn)).str(prefix).u32(uint32(len(content))).raw(content).b
}

func text(s string) Value   { return Value{Kind: KindText, Data: []byte(s)} }
func binval(p []byte) Value { return Value{Kind: KindBinary, Data: p} }
func null() Value           { return Value{Kind: KindNull} }
func unchanged() Value      { return Value{Kind: KindUnchanged} }

// outboxRel is the Debezium-style outbox table used throughout the tests.
func outboxRel(id uint32) Relation {
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
