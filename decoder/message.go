package decoder

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a WAL position. It is pglogrepl's type so that positions flow to the
// replication connection without conversion.
type LSN = pglogrepl.LSN

// MessageType is the one-byte tag that starts every pgoutput message.
type MessageType byte

// Message tags of pgoutput protocol version 1, plus 'M' (PG14+ with
// messages 'true'). The streaming tags exist only to name them in errors:
// proto_version 1 never sends them.
const (
	TypeBegin    MessageType = 'B'
	TypeCommit   MessageType = 'C'
	TypeOrigin   MessageType = 'O'
	TypeRelation MessageType = 'R'
	TypeType     MessageType = 'Y'
	TypeInsert   MessageType = 'I'
	TypeUpdate   MessageType = 'U'
	TypeDelete   MessageType = 'D'
	TypeTruncate MessageType = 'T'
	TypeMessage  MessageType = 'M'

	TypeStreamStart  MessageType = 'S'
	TypeStreamStop   MessageType = 'E'
	TypeStreamCommit MessageType = 'c'
	TypeStreamAbort  MessageType = 'A'
)

// String returns the lowercase name used in error messages ("decode insert: ...").
func (t MessageType) String() string {
	switch t {
	case TypeBegin:
		return "begin"
	case TypeCommit:
		return "commit"
	case TypeOrigin:
		return "origin"
	case TypeRelation:
		return "relation"
	case TypeType:
		return "type"
	case TypeInsert:
		return "insert"
	case TypeUpdate:
		return "update"
	case TypeDelete:
		return "delete"
	case TypeTruncate:
		return "truncate"
	case TypeMessage:
		return "message"
	case TypeStreamStart:
		return "stream start"
	case TypeStreamStop:
		return "stream stop"
	case TypeStreamCommit:
		return "stream commit"
	case TypeStreamAbort:
		return "stream abort"
	case 'b':
		return "begin prepare"
	case 'P':
		return "prepare"
	case 'K':
		return "commit prepared"
	case 'r':
		return "rollback prepared"
	case 'p':
		return "stream prepare"
	}
	return fmt.Sprintf("unknown type 0x%02x", byte(t))
}

// Begin starts a transaction. FinalLSN is the LSN of its commit record (the
// same as Commit.CommitLSN), not the position to confirm.
type Begin struct {
	FinalLSN   LSN
	CommitTime time.Time
	Xid        uint32
}

// Commit ends a transaction. EndLSN is the position to confirm once every
// event of the transaction is safely published (see design notes §1).
type Commit struct {
	Flags      uint8
	CommitLSN  LSN
	EndLSN     LSN
	CommitTime time.Time
}

// Column describes one column of a Relation, in tuple order.
type Column struct {
	Key     bool // part of the replica identity
	Name    string
	TypeOID uint32
	TypeMod int32
}

// Relation is the schema of a published table as pgoutput last described it.
// A decoded Relation is never modified: a schema change yields a new value,
// so callers may keep the pointer and compare it to notice the change.
type Relation struct {
	ID              uint32
	Namespace       string // "pg_catalog" when the wire carries the empty string
	Name            string
	ReplicaIdentity byte // 'd' default, 'n' nothing, 'f' full, 'i' index
	Columns         []Column

	index     map[string]int // column name -> position; nil for hand-built values
	qualified string         // "namespace.name", precomputed by the decoder
}

// Column returns the position of the named column in Columns, or -1. It is
// O(1) for decoded relations because callers look up the same few columns
// for every row.
func (r *Relation) Column(name string) int {
	if r.index != nil {
		if i, ok := r.index[name]; ok {
			return i
		}
		return -1
	}
	for i := range r.Columns {
		if r.Columns[i].Name == name {
			return i
		}
	}
	return -1
}

// QualifiedName returns "namespace.name". Decoded relations return a
// precomputed string, so calling it per row does not allocate.
func (r *Relation) QualifiedName() string {
	if r.qualified != "" {
		return r.qualified
	}
	return r.Namespace + "." + r.Name
}

// Value kinds, as sent by pgoutput in each tuple column.
const (
	KindNull      byte = 'n'
	KindUnchanged byte = 'u' // unchanged TOASTed value; the data is not sent
	KindText      byte = 't'
	KindBinary    byte = 'b'
)

// Value is one column of a tuple. Data is set only for KindText and
// KindBinary and aliases the buffer passed to Decode.
type Value struct {
	Kind byte
	Data []byte
}

// LogicalMessage is a pg_logical_emit_message record. Non-transactional
// messages arrive outside any Begin/Commit pair.
type LogicalMessage struct {
	Transactional bool
	LSN           LSN
	Prefix        string
	Content       []byte // aliases the buffer passed to Decode
}

// Event is one decoded pgoutput message. Only the fields of its Type are set.
type Event struct {
	Type      MessageType
	Begin     Begin          // TypeBegin
	Commit    Commit         // TypeCommit
	Relation  *Relation      // TypeRelation: the new relation; TypeInsert, TypeUpdate, TypeDelete: the target
	Values    []Value        // TypeInsert: the new tuple, one Value per Relation.Columns entry
	Message   LogicalMessage // TypeMessage
	Origin    string         // TypeOrigin: the origin name
	Truncated []uint32       // TypeTruncate: relation ids
}
