package decoder

import (
	"time"

	pt "github.com/pgoutbox/pgoutbox/internal/pgoutputtest"
)

// The messages come from internal/pgoutputtest, which writes them the way proto.c
// does, so these tests do not depend on the decoder they check.

func beginMsg(final LSN, commitTime time.Time, xid uint32) []byte {
	return pt.Begin(final, commitTime, xid)
}

func commitMsg(commit, end LSN, commitTime time.Time) []byte {
	return pt.Commit(commit, end, commitTime)
}

func originMsg(lsn LSN, name string) []byte { return pt.Origin(lsn, name) }

func relationMsg(rel Relation) []byte {
	r := pt.Relation{ID: rel.ID, Namespace: rel.Namespace, Name: rel.Name, ReplicaIdentity: rel.ReplicaIdentity}
	for _, c := range rel.Columns {
		r.Columns = append(r.Columns, pt.Column{Key: c.Key, Name: c.Name, TypeOID: c.TypeOID, TypeMod: c.TypeMod})
	}
	return pt.RelationMsg(r)
}

func typeMsg(oid uint32, namespace, name string) []byte { return pt.Type(oid, namespace, name) }

func values(vals []Value) []pt.Value {
	out := make([]pt.Value, len(vals))
	for i, v := range vals {
		out[i] = pt.Value{Kind: v.Kind, Data: v.Data}
	}
	return out
}

func insertMsg(relID uint32, vals ...Value) []byte { return pt.Insert(relID, values(vals)...) }

// updateMsg writes an update; oldTag 0 means no old tuple.
func updateMsg(relID uint32, oldTag byte, old, vals []Value) []byte {
	return pt.Update(relID, oldTag, values(old), values(vals))
}

func deleteMsg(relID uint32, oldTag byte, old []Value) []byte {
	return pt.Delete(relID, oldTag, values(old))
}

func truncateMsg(options byte, ids ...uint32) []byte { return pt.Truncate(options, ids...) }

func logicalMsg(transactional bool, lsn LSN, prefix string, content []byte) []byte {
	return pt.Logical(transactional, lsn, prefix, content)
}

func text(s string) Value   { return Value{Kind: KindText, Data: []byte(s)} }
func binval(p []byte) Value { return Value{Kind: KindBinary, Data: p} }
func null() Value           { return Value{Kind: KindNull} }
func unchanged() Value      { return Value{Kind: KindUnchanged} }

// outboxRel is the Debezium-style outbox table used throughout the tests.
func outboxRel(id uint32) Relation {
	r := pt.Outbox(id)
	rel := Relation{ID: r.ID, Namespace: r.Namespace, Name: r.Name, ReplicaIdentity: r.ReplicaIdentity}
	for _, c := range r.Columns {
		rel.Columns = append(rel.Columns, Column{Key: c.Key, Name: c.Name, TypeOID: c.TypeOID, TypeMod: c.TypeMod})
	}
	return rel
}
