// Package decoder decodes PostgreSQL pgoutput logical replication messages
// (proto_version 1, plus the 'M' logical message of PG14+). It is pure: bytes
// in, events out, with no I/O. Decoding sits on the hot path, so Begin,
// Insert and Commit do not allocate: the Event and its Values are reused and
// byte slices alias the input. Malformed input is an error, never a panic.
package decoder

import (
	"errors"
	"fmt"
	"io"
)

var (
	// ErrUnknownRelation means a row arrived for a relation id that no
	// Relation message described. pgoutput always describes a relation
	// before its first row in a session, so this is a protocol violation.
	ErrUnknownRelation = errors.New("unknown relation")

	// ErrUnsupported marks messages that proto_version 1 must not carry
	// (streaming and two-phase commit).
	ErrUnsupported = errors.New("not supported")
)

// Decoder decodes the messages of one replication session in order. It keeps
// the relation cache that Insert, Update and Delete refer to. A Decoder is
// not safe for concurrent use.
type Decoder struct {
	rels      map[uint32]*Relation
	ev        Event
	values    []Value
	truncated []uint32
	prefix    string // last logical message prefix, reused to avoid an allocation
	origin    string // last origin name, reused likewise
}

// New returns a Decoder with an empty relation cache.
func New() *Decoder {
	return &Decoder{rels: make(map[uint32]*Relation)}
}

// Relation returns the cached relation with the given id, or nil.
func (d *Decoder) Relation(id uint32) *Relation {
	return d.rels[id]
}

// Decode decodes one pgoutput message (the WAL data of one XLogData). The
// returned *Event and every byte slice in it alias buf and the decoder's
// reused storage: they are valid only until the next Decode call. Relations
// are the exception: they are copied and stay valid.
//
// On error the relation cache is unchanged.
func (d *Decoder) Decode(buf []byte) (*Event, error) {
	if len(buf) == 0 {
		return nil, errors.New("decode: empty message")
	}
	t := MessageType(buf[0])
	d.ev = Event{Type: t}
	r := reader{buf: buf, off: 1}
	var err error
	switch t {
	case TypeBegin:
		err = d.begin(&r)
	case TypeCommit:
		err = d.commit(&r)
	case TypeOrigin:
		err = d.originMsg(&r)
	case TypeRelation:
		err = d.relation(&r)
	case TypeType:
		err = d.typeMsg(&r)
	case TypeInsert:
		err = d.insert(&r)
	case TypeUpdate:
		err = d.update(&r)
	case TypeDelete:
		err = d.delete(&r)
	case TypeTruncate:
		err = d.truncate(&r)
	case TypeMessage:
		err = d.message(&r)
	case TypeStreamStart, TypeStreamStop, TypeStreamCommit, TypeStreamAbort:
		err = fmt.Errorf("streaming is %w with proto_version 1 (is streaming enabled on the slot?)", ErrUnsupported)
	case 'b', 'P', 'K', 'r', 'p':
		err = fmt.Errorf("two-phase commit is %w (is two_phase enabled on the slot?)", ErrUnsupported)
	default:
		return nil, fmt.Errorf("decode: unknown message type 0x%02x %q", buf[0], buf[0])
	}
	if err == nil {
		err = r.finish()
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", t, err)
	}
	if t == TypeRelation {
		d.rels[d.ev.Relation.ID] = d.ev.Relation
	}
	return &d.ev, nil
}

func (d *Decoder) begin(r *reader) error {
	lsn := LSN(r.u64("final lsn"))
	ts := int64(r.u64("commit time"))
	xid := r.u32("xid")
	if r.err != nil {
		return r.err
	}
	if lsn == 0 {
		return errors.New("final lsn is 0")
	}
	d.ev.Begin = Begin{FinalLSN: lsn, CommitTime: pgTime(ts), Xid: xid}
	return nil
}

func (d *Decoder) commit(r *reader) error {
	flags := r.u8("flags")
	commitLSN := LSN(r.u64("commit lsn"))
	endLSN := LSN(r.u64("end lsn"))
	ts := int64(r.u64("commit time"))
	if r.err != nil {
		return r.err
	}
	// proto.c rejects any flag: none is defined.
	if flags != 0 {
		return fmt.Errorf("unknown flags 0x%02x", flags)
	}
	d.ev.Commit = Commit{Flags: flags, CommitLSN: commitLSN, EndLSN: endLSN, CommitTime: pgTime(ts)}
	return nil
}

func (d *Decoder) originMsg(r *reader) error {
	r.u64("origin lsn")
	name := r.cstring("origin name")
	if r.err != nil {
		return r.err
	}
	if string(name) != d.origin {
		d.origin = string(name)
	}
	d.ev.Origin = d.origin
	return nil
}

// relation decodes a Relation message into a new *Relation. Decode caches it
// only once the whole message is known to be valid.
func (d *Decoder) relation(r *reader) error {
	id := r.u32("relation id")
	ns := r.cstring("namespace")
	name := r.cstring("relation name")
	ident := r.u8("replica identity")
	n := int(r.u16("column count"))
	if r.err != nil {
		return r.err
	}
	switch ident {
	case 'd', 'n', 'f', 'i':
	default:
		return fmt.Errorf("relation %d: unknown replica identity 0x%02x", id, ident)
	}
	// Each column takes at least 10 bytes; checking first keeps a bogus
	// count from allocating.
	if r.remaining() < n*10 {
		r.short("columns", n*10)
		return fmt.Errorf("relation %d: %d columns: %w", id, n, r.err)
	}
	rel := &Relation{
		ID:              id,
		Namespace:       string(ns),
		Name:            string(name),
		ReplicaIdentity: ident,
		Columns:         make([]Column, n),
		index:           make(map[string]int, n),
	}
	if rel.Namespace == "" {
		rel.Namespace = "pg_catalog" // proto.c sends pg_catalog as ""
	}
	rel.qualified = rel.Namespace + "." + rel.Name
	for i := range n {
		flags := r.u8("column flags")
		cname := r.cstring("column name")
		oid := r.u32("column type oid")
		mod := int32(r.u32("column type modifier"))
		if r.err != nil {
			return fmt.Errorf("relation %s: column %d: %w", rel.qualified, i, r.err)
		}
		c := Column{Key: flags&1 != 0, Name: string(cname), TypeOID: oid, TypeMod: mod}
		if _, dup := rel.index[c.Name]; dup {
			return fmt.Errorf("relation %s: duplicate column name %q", rel.qualified, c.Name)
		}
		rel.index[c.Name] = i
		rel.Columns[i] = c
	}
	d.ev.Relation = rel
	return nil
}

func (d *Decoder) typeMsg(r *reader) error {
	r.u32("type oid")
	r.cstring("type namespace")
	r.cstring("type name")
	return r.err
}

func (d *Decoder) insert(r *reader) error {
	rel, err := d.target(r)
	if err != nil {
		return err
	}
	if tag := r.u8("tuple tag"); r.err == nil && tag != 'N' {
		r.off--
		r.fail("expected new tuple tag 'N', got 0x%02x", tag)
	}
	if r.err != nil {
		return r.err
	}
	n := len(rel.Columns)
	if cap(d.values) < n {
		d.values = make([]Value, n)
	}
	d.ev.Values = d.values[:n]
	return d.tuple(r, rel, d.ev.Values)
}

func (d *Decoder) update(r *reader) error {
	rel, err := d.target(r)
	if err != nil {
		return err
	}
	tag := r.u8("tuple tag")
	if r.err == nil && (tag == 'K' || tag == 'O') {
		if err := d.tuple(r, rel, nil); err != nil {
			return fmt.Errorf("old tuple: %w", err)
		}
		if tag = r.u8("new tuple tag"); r.err == nil && tag != 'N' {
			r.off--
			r.fail("expected new tuple tag 'N' after old tuple, got 0x%02x", tag)
		}
	} else if r.err == nil && tag != 'N' {
		r.off--
		r.fail("expected tuple tag 'K', 'O' or 'N', got 0x%02x", tag)
	}
	if r.err != nil {
		return r.err
	}
	if err := d.tuple(r, rel, nil); err != nil {
		return fmt.Errorf("new tuple: %w", err)
	}
	return nil
}

func (d *Decoder) delete(r *reader) error {
	rel, err := d.target(r)
	if err != nil {
		return err
	}
	tag := r.u8("tuple tag")
	if r.err != nil {
		return r.err
	}
	if tag != 'K' && tag != 'O' {
		r.off--
		r.fail("expected tuple tag 'K' or 'O', got 0x%02x", tag)
		return r.err
	}
	if err := d.tuple(r, rel, nil); err != nil {
		return fmt.Errorf("old tuple: %w", err)
	}
	return nil
}

// target reads the relation id of a row message and looks it up.
func (d *Decoder) target(r *reader) (*Relation, error) {
	id := r.u32("relation id")
	if r.err != nil {
		return nil, r.err
	}
	rel := d.rels[id]
	if rel == nil {
		return nil, fmt.Errorf("%w %d", ErrUnknownRelation, id)
	}
	d.ev.Relation = rel
	return rel, nil
}

// tuple reads TupleData for rel into dst, or only validates it when dst is nil.
func (d *Decoder) tuple(r *reader, rel *Relation, dst []Value) error {
	n := int(r.u16("tuple column count"))
	if r.err != nil {
		return r.err
	}
	if n != len(rel.Columns) {
		return fmt.Errorf("tuple has %d columns, relation %s has %d", n, rel.QualifiedName(), len(rel.Columns))
	}
	for i := range n {
		var v Value
		v.Kind = r.u8("column kind")
		switch v.Kind {
		case KindNull, KindUnchanged:
		case KindText, KindBinary:
			v.Data = r.length("column value")
		default:
			if r.err == nil {
				r.off--
				r.fail("unknown column kind 0x%02x", v.Kind)
			}
		}
		if r.err != nil {
			return fmt.Errorf("column %d (%s): %w", i, rel.Columns[i].Name, r.err)
		}
		if dst != nil {
			dst[i] = v
		}
	}
	return nil
}

func (d *Decoder) truncate(r *reader) error {
	n := r.u32("relation count")
	r.u8("options")
	if r.err != nil {
		return r.err
	}
	if uint64(n)*4 > uint64(r.remaining()) {
		return fmt.Errorf("read relation ids at offset %d: %d ids need %d bytes, have %d: %w",
			r.off, n, uint64(n)*4, r.remaining(), io.ErrUnexpectedEOF)
	}
	ids := d.truncated[:0]
	for range n {
		ids = append(ids, r.u32("relation id"))
	}
	d.truncated = ids
	d.ev.Truncated = ids
	return r.err
}

func (d *Decoder) message(r *reader) error {
	flags := r.u8("flags")
	lsn := LSN(r.u64("lsn"))
	prefix := r.cstring("prefix")
	content := r.length("content")
	if r.err != nil {
		return r.err
	}
	if flags&^1 != 0 {
		return fmt.Errorf("unknown flags 0x%02x", flags)
	}
	if string(prefix) != d.prefix {
		d.prefix = string(prefix)
	}
	d.ev.Message = LogicalMessage{Transactional: flags&1 != 0, LSN: lsn, Prefix: d.prefix, Content: content}
	return nil
}
