package decoder

import (
	"bytes"
	"errors"
	pt "github.com/pgoutbox/pgoutbox/internal/pgoutputtest"
	"io"
	"strings"
	"testing"
	"time"
)

var (
	t0     = time.Date(2025, 5, 6, 7, 8, 9, 123456000, time.UTC)
	relID  = uint32(16384)
	outbox = outboxRel(relID)
)

// decodeAll feeds msgs to d and fails the test on the first error.
func decodeAll(t *testing.T, d *Decoder, msgs ...[]byte) {
	t.Helper()
	for i, m := range msgs {
		if _, err := d.Decode(m); err != nil {
			t.Fatalf("setup message %d (%q): %v", i, m[0], err)
		}
	}
}

func TestDecode(t *testing.T) {
	row := []Value{text("0f8fad5b-d9cb-469f-a165-70867728950e"), text("order"), text("o-1"), text("created"), text(`{"a":1}`)}
	tests := []struct {
		name  string
		setup [][]byte
		msg   []byte
		check func(t *testing.T, ev *Event, d *Decoder)
	}{{
		name: "begin",
		msg:  beginMsg(0x16B3748, t0, 747),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			want := Begin{FinalLSN: 0x16B3748, CommitTime: t0, Xid: 747}
			if ev.Begin != want {
				t.Errorf("Begin = %+v, want %+v", ev.Begin, want)
			}
		},
	}, {
		name: "commit",
		msg:  commitMsg(0x16B3748, 0x16B3778, t0),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			want := Commit{CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: t0}
			if ev.Commit != want {
				t.Errorf("Commit = %+v, want %+v", ev.Commit, want)
			}
		},
	}, {
		name: "commit time before 2000",
		msg:  commitMsg(1, 2, time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if want := time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC); !ev.Commit.CommitTime.Equal(want) {
				t.Errorf("CommitTime = %v, want %v", ev.Commit.CommitTime, want)
			}
		},
	}, {
		name: "origin",
		msg:  originMsg(0x12345678, "upstream"),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if ev.Origin != "upstream" {
				t.Errorf("Origin = %q", ev.Origin)
			}
		},
	}, {
		name: "relation",
		msg:  relationMsg(outbox),
		check: func(t *testing.T, ev *Event, d *Decoder) {
			r := ev.Relation
			if r == nil || d.Relation(relID) != r {
				t.Fatalf("Relation = %p, cached %p", r, d.Relation(relID))
			}
			if r.QualifiedName() != "public.outbox" || r.ReplicaIdentity != 'd' {
				t.Errorf("relation = %q identity %q", r.QualifiedName(), r.ReplicaIdentity)
			}
			if len(r.Columns) != 5 || r.Columns[0] != outbox.Columns[0] || r.Columns[4] != outbox.Columns[4] {
				t.Errorf("Columns = %+v", r.Columns)
			}
			for i, c := range outbox.Columns {
				if got := r.Column(c.Name); got != i {
					t.Errorf("Column(%q) = %d, want %d", c.Name, got, i)
				}
			}
			if got := r.Column("nope"); got != -1 {
				t.Errorf("Column(nope) = %d, want -1", got)
			}
		},
	}, {
		name: "relation in pg_catalog",
		msg:  relationMsg(Relation{ID: 1, Name: "pg_x", ReplicaIdentity: 'n'}),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if got := ev.Relation.QualifiedName(); got != "pg_catalog.pg_x" {
				t.Errorf("QualifiedName = %q", got)
			}
			if len(ev.Relation.Columns) != 0 {
				t.Errorf("Columns = %+v", ev.Relation.Columns)
			}
		},
	}, {
		name: "type",
		msg:  typeMsg(16392, "public", "mood"),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if ev.Type != TypeType {
				t.Errorf("Type = %v", ev.Type)
			}
		},
	}, {
		name:  "insert",
		setup: [][]byte{relationMsg(outbox)},
		msg:   insertMsg(relID, row...),
		check: func(t *testing.T, ev *Event, d *Decoder) {
			if ev.Relation != d.Relation(relID) {
				t.Errorf("Relation = %p, want cached %p", ev.Relation, d.Relation(relID))
			}
			assertValues(t, ev.Values, row)
		},
	}, {
		name:  "insert with nulls, unchanged toast, empty string, unicode, binary",
		setup: [][]byte{relationMsg(outbox)},
		msg:   insertMsg(relID, text("id"), text(""), null(), unchanged(), binval([]byte{0, 0xff})),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			assertValues(t, ev.Values, []Value{text("id"), text(""), null(), unchanged(), binval([]byte{0, 0xff})})
		},
	}, {
		name:  "insert multi-byte utf-8",
		setup: [][]byte{relationMsg(outbox)},
		msg:   insertMsg(relID, text("ünïcødé"), text("日本"), text("🚀"), null(), text(`{"msg": "héllo 🌍"}`)),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if got := string(ev.Values[2].Data); got != "🚀" {
				t.Errorf("Values[2] = %q", got)
			}
			if got := string(ev.Values[4].Data); got != `{"msg": "héllo 🌍"}` {
				t.Errorf("Values[4] = %q", got)
			}
		},
	}, {
		name:  "update without old tuple",
		setup: [][]byte{relationMsg(outbox)},
		msg:   updateMsg(relID, 0, nil, row),
		check: func(t *testing.T, ev *Event, d *Decoder) {
			if ev.Relation != d.Relation(relID) || ev.Values != nil {
				t.Errorf("Relation %p Values %v", ev.Relation, ev.Values)
			}
		},
	}, {
		name:  "update with key",
		setup: [][]byte{relationMsg(outbox)},
		msg:   updateMsg(relID, 'K', []Value{text("1"), null(), null(), null(), null()}, row),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if ev.Type != TypeUpdate || ev.Relation == nil {
				t.Errorf("event = %+v", ev)
			}
		},
	}, {
		name:  "update with old tuple",
		setup: [][]byte{relationMsg(outbox)},
		msg:   updateMsg(relID, 'O', row, []Value{text("1"), unchanged(), null(), null(), null()}),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if ev.Type != TypeUpdate || ev.Relation == nil {
				t.Errorf("event = %+v", ev)
			}
		},
	}, {
		name:  "delete",
		setup: [][]byte{relationMsg(outbox)},
		msg:   deleteMsg(relID, 'K', []Value{text("1"), null(), null(), null(), null()}),
		check: func(t *testing.T, ev *Event, d *Decoder) {
			if ev.Type != TypeDelete || ev.Relation != d.Relation(relID) {
				t.Errorf("event = %+v", ev)
			}
		},
	}, {
		name: "truncate",
		msg:  truncateMsg(3, 16384, 16390),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			if len(ev.Truncated) != 2 || ev.Truncated[0] != 16384 || ev.Truncated[1] != 16390 {
				t.Errorf("Truncated = %v", ev.Truncated)
			}
		},
	}, {
		name: "transactional message",
		msg:  logicalMsg(true, 0x1551C00, "outbox", []byte(`{"kind": "ping"}`)),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			m := ev.Message
			if !m.Transactional || m.LSN != 0x1551C00 || m.Prefix != "outbox" || string(m.Content) != `{"kind": "ping"}` {
				t.Errorf("Message = %+v", m)
			}
		},
	}, {
		name: "non-transactional empty message",
		msg:  logicalMsg(false, 7, "", nil),
		check: func(t *testing.T, ev *Event, _ *Decoder) {
			m := ev.Message
			if m.Transactional || m.LSN != 7 || m.Prefix != "" || len(m.Content) != 0 {
				t.Errorf("Message = %+v", m)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New()
			decodeAll(t, d, tt.setup...)
			ev, err := d.Decode(tt.msg)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if ev.Type != MessageType(tt.msg[0]) {
				t.Errorf("Type = %v, want %v", ev.Type, MessageType(tt.msg[0]))
			}
			tt.check(t, ev, d)
		})
	}
}

func assertValues(t *testing.T, got, want []Value) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Kind != want[i].Kind || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Errorf("value %d = %c %q, want %c %q", i, got[i].Kind, got[i].Data, want[i].Kind, want[i].Data)
		}
		if (want[i].Kind == KindText || want[i].Kind == KindBinary) != (got[i].Data != nil) {
			t.Errorf("value %d: Data nil = %v for kind %c", i, got[i].Data == nil, got[i].Kind)
		}
	}
}

func TestSchemaChange(t *testing.T) {
	d := New()
	decodeAll(t, d, relationMsg(outbox))
	old := d.Relation(relID)

	changed := outboxRel(relID)
	changed.Columns = append(changed.Columns, Column{Name: "tracing", TypeOID: 25, TypeMod: -1})
	ev, err := d.Decode(relationMsg(changed))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Relation == old || d.Relation(relID) != ev.Relation {
		t.Fatalf("second relation: got %p, old %p, cached %p; want a new cached pointer", ev.Relation, old, d.Relation(relID))
	}
	if len(old.Columns) != 5 || old.Column("tracing") != -1 {
		t.Errorf("old relation was modified: %+v", old.Columns)
	}
	if got := ev.Relation.Column("tracing"); got != 5 {
		t.Errorf("Column(tracing) = %d, want 5", got)
	}

	// Rows now need 6 columns.
	vals := []Value{text("id"), text("t"), text("a"), text("x"), null(), text("trace-1")}
	ev, err = d.Decode(insertMsg(relID, vals...))
	if err != nil {
		t.Fatal(err)
	}
	assertValues(t, ev.Values, vals)
	_, err = d.Decode(insertMsg(relID, vals[:5]...))
	if err == nil || err.Error() != "decode insert: tuple has 5 columns, relation public.outbox has 6" {
		t.Errorf("old-shape row: err = %v", err)
	}
}

func TestRelationOwnsStrings(t *testing.T) {
	d := New()
	msg := relationMsg(outbox)
	ev, err := d.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msg {
		msg[i] = 'X'
	}
	r := ev.Relation
	if r.Namespace != "public" || r.Name != "outbox" || r.Columns[1].Name != "aggregatetype" {
		t.Errorf("relation changed with its buffer: %+v", r)
	}
}

func TestValuesAliasInput(t *testing.T) {
	d := New()
	decodeAll(t, d, relationMsg(outbox))
	msg := insertMsg(relID, text("a"), text("b"), text("c"), text("d"), text("e"))
	ev, err := d.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.IndexByte(msg, 'e')
	msg[i] = 'E'
	if string(ev.Values[4].Data) != "E" {
		t.Errorf("Values[4] = %q: want it to alias the input (no copy on the hot path)", ev.Values[4].Data)
	}
}

func TestDecodeErrors(t *testing.T) {
	other := Relation{ID: 7, Namespace: "s", Name: "t", ReplicaIdentity: 'd', Columns: []Column{{Name: "a"}, {Name: "b"}}}
	negLen := new(pt.Enc).U8('I').U32(relID).U8('N').U16(5).U8('t').U32(0xffffffff).B
	tests := []struct {
		name    string
		setup   [][]byte
		msg     []byte
		want    string // exact error text, or a prefix ending in "…"
		wantErr error
	}{
		{name: "empty", msg: nil, want: "decode: empty message"},
		{name: "unknown tag", msg: []byte{'Z', 0}, want: `decode: unknown message type 0x5a 'Z'`},
		{name: "stream start", msg: []byte{'S', 0, 0, 0, 1, 1}, want: "decode stream start: streaming is not supported with proto_version 1 (is streaming enabled on the slot?)", wantErr: ErrUnsupported},
		{name: "stream commit", msg: []byte{'c'}, want: "decode stream commit: streaming is not supported…", wantErr: ErrUnsupported},
		{name: "stream stop", msg: []byte{'E'}, want: "decode stream stop: streaming…", wantErr: ErrUnsupported},
		{name: "stream abort", msg: []byte{'A', 0, 0, 0, 1, 0, 0, 0, 1}, want: "decode stream abort: streaming…", wantErr: ErrUnsupported},
		{name: "begin prepare", msg: []byte{'b'}, want: "decode begin prepare: two-phase commit is not supported…", wantErr: ErrUnsupported},
		{name: "unknown relation", msg: insertMsg(relID, text("x")), want: "decode insert: unknown relation 16384", wantErr: ErrUnknownRelation},
		{name: "update unknown relation", msg: updateMsg(9, 0, nil, nil), want: "decode update: unknown relation 9", wantErr: ErrUnknownRelation},
		{name: "delete unknown relation", msg: deleteMsg(9, 'K', nil), want: "decode delete: unknown relation 9", wantErr: ErrUnknownRelation},
		{
			name: "insert too few columns", setup: [][]byte{relationMsg(outbox)},
			msg:  insertMsg(relID, text("a"), text("b"), text("c")),
			want: "decode insert: tuple has 3 columns, relation public.outbox has 5",
		},
		{
			name: "insert too many columns", setup: [][]byte{relationMsg(other)},
			msg:  insertMsg(7, null(), null(), null()),
			want: "decode insert: tuple has 3 columns, relation s.t has 2",
		},
		{
			name: "update old key column mismatch", setup: [][]byte{relationMsg(other)},
			msg:  updateMsg(7, 'K', []Value{null()}, []Value{null(), null()}),
			want: "decode update: old tuple: tuple has 1 columns, relation s.t has 2",
		},
		{
			name: "delete column mismatch", setup: [][]byte{relationMsg(other)},
			msg:  deleteMsg(7, 'O', []Value{null(), null(), null()}),
			want: "decode delete: old tuple: tuple has 3 columns, relation s.t has 2",
		},
		{
			name: "negative length", setup: [][]byte{relationMsg(outbox)}, msg: negLen,
			want: "decode insert: column 0 (id): read column value: negative length -1 (offset 9)",
		},
		{
			name: "unknown column kind", setup: [][]byte{relationMsg(other)},
			msg:  new(pt.Enc).U8('I').U32(7).U8('N').U16(2).U8('n').U8('x').B,
			want: "decode insert: column 1 (b): unknown column kind 0x78 (offset 9)",
		},
		{
			name: "insert without N", setup: [][]byte{relationMsg(other)},
			msg:  new(pt.Enc).U8('I').U32(7).U8('K').U16(2).U8('n').U8('n').B,
			want: "decode insert: expected new tuple tag 'N', got 0x4b (offset 5)",
		},
		{
			name: "update bad tag", setup: [][]byte{relationMsg(other)},
			msg:  new(pt.Enc).U8('U').U32(7).U8('X').U16(2).U8('n').U8('n').B,
			want: "decode update: expected tuple tag 'K', 'O' or 'N', got 0x58 (offset 5)",
		},
		{
			name: "update two old tuples", setup: [][]byte{relationMsg(other)},
			msg:  new(pt.Enc).U8('U').U32(7).U8('K').Tuple(values([]Value{null(), null()})).U8('O').Tuple(values([]Value{null(), null()})).B,
			want: "decode update: expected new tuple tag 'N' after old tuple, got 0x4f (offset 10)",
		},
		{
			name: "delete with new tuple", setup: [][]byte{relationMsg(other)},
			msg:  new(pt.Enc).U8('D').U32(7).U8('N').U16(2).U8('n').U8('n').B,
			want: "decode delete: expected tuple tag 'K' or 'O', got 0x4e (offset 5)",
		},
		{name: "begin without lsn", msg: beginMsg(0, t0, 1), want: "decode begin: final lsn is 0"},
		{name: "commit flags", msg: append([]byte{'C', 1}, commitMsg(1, 2, t0)[2:]...), want: "decode commit: unknown flags 0x01"},
		{name: "message flags", msg: append([]byte{'M', 3}, logicalMsg(true, 1, "p", nil)[2:]...), want: "decode message: unknown flags 0x03"},
		{
			name: "message negative length",
			msg:  new(pt.Enc).U8('M').U8(1).U64(1).Str("p").U32(0x80000000).B,
			want: "decode message: read content: negative length -2147483648 (offset 12)",
		},
		{
			name: "relation bad replica identity",
			msg:  relationMsg(Relation{ID: 3, Namespace: "s", Name: "t", ReplicaIdentity: 'x'}),
			want: "decode relation: relation 3: unknown replica identity 0x78",
		},
		{
			name: "relation duplicate column",
			msg:  relationMsg(Relation{ID: 3, Namespace: "s", Name: "t", ReplicaIdentity: 'd', Columns: []Column{{Name: "a"}, {Name: "a"}}}),
			want: `decode relation: relation s.t: duplicate column name "a"`,
		},
		{
			name: "relation column count beyond message",
			msg:  new(pt.Enc).U8('R').U32(3).Str("s").Str("t").U8('d').U16(65535).B,
			want: "decode relation: relation 3: 65535 columns: read columns at offset 12: need 655350 bytes, have 0: unexpected EOF", wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "truncate count beyond message",
			msg:  new(pt.Enc).U8('T').U32(0xffffffff).U8(0).U32(1).B,
			want: "decode truncate: read relation ids at offset 6: 4294967295 ids need 17179869180 bytes, have 4: unexpected EOF", wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "string without NUL",
			msg:  []byte("O\x00\x00\x00\x00\x00\x00\x00\x01name"),
			want: "decode origin: read origin name at offset 9: no NUL terminator in 4 bytes: unexpected EOF", wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "short fixed field",
			msg:  []byte{'B', 0, 0, 0},
			want: "decode begin: read final lsn at offset 1: need 8 bytes, have 3: unexpected EOF", wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "short value", setup: [][]byte{relationMsg(other)},
			msg:  new(pt.Enc).U8('I').U32(7).U8('N').U16(2).U8('n').U8('t').U32(10).Raw([]byte("abc")).B,
			want: "decode insert: column 1 (b): read column value at offset 14: need 10 bytes, have 3: unexpected EOF", wantErr: io.ErrUnexpectedEOF,
		},
		{name: "trailing bytes", msg: append(beginMsg(1, t0, 1), 0xAA, 0xBB), want: "decode begin: 2 trailing bytes at offset 21"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New()
			decodeAll(t, d, tt.setup...)
			ev, err := d.Decode(tt.msg)
			if err == nil {
				t.Fatalf("Decode = %+v, want error %q", ev, tt.want)
			}
			if ev != nil {
				t.Errorf("Decode returned an event with error %v", err)
			}
			if prefix, ok := strings.CutSuffix(tt.want, "…"); ok {
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("err = %q, want prefix %q", err, prefix)
				}
			} else if err.Error() != tt.want {
				t.Errorf("err = %q\nwant  %q", err, tt.want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantErr)
			}
		})
	}
}

// validMessages returns one valid message of every type, each with the
// messages that must precede it.
func validMessages() []struct {
	name  string
	setup [][]byte
	msg   []byte
} {
	rel := relationMsg(outbox)
	row := []Value{text("id"), text("order"), null(), unchanged(), binval([]byte("{}"))}
	return []struct {
		name  string
		setup [][]byte
		msg   []byte
	}{
		{"begin", nil, beginMsg(1, t0, 2)},
		{"commit", nil, commitMsg(1, 2, t0)},
		{"origin", nil, originMsg(1, "o")},
		{"relation", nil, rel},
		{"relation no columns", nil, relationMsg(Relation{ID: 1, Namespace: "s", Name: "t", ReplicaIdentity: 'n'})},
		{"type", nil, typeMsg(1, "", "int4")},
		{"insert", [][]byte{rel}, insertMsg(relID, row...)},
		{"update", [][]byte{rel}, updateMsg(relID, 0, nil, row)},
		{"update key", [][]byte{rel}, updateMsg(relID, 'K', row, row)},
		{"update old", [][]byte{rel}, updateMsg(relID, 'O', row, row)},
		{"delete", [][]byte{rel}, deleteMsg(relID, 'K', row)},
		{"truncate", nil, truncateMsg(0, 1, 2, 3)},
		{"truncate none", nil, truncateMsg(0)},
		{"message", nil, logicalMsg(true, 1, "outbox", []byte("hello"))},
		{"message empty", nil, logicalMsg(false, 1, "", nil)},
	}
}

func TestEveryTruncationFails(t *testing.T) {
	for _, tt := range validMessages() {
		t.Run(tt.name, func(t *testing.T) {
			d := New()
			decodeAll(t, d, tt.setup...)
			if _, err := d.Decode(tt.msg); err != nil {
				t.Fatalf("full message: %v", err)
			}
			before := d.Relation(relID)
			for cut := range len(tt.msg) {
				// The clone has no spare capacity, so a read past the cut
				// cannot silently succeed by reslicing.
				buf := bytes.Clone(tt.msg[:cut])
				ev, err := d.Decode(buf)
				if err == nil {
					t.Fatalf("cut at %d/%d: Decode = %+v, want error", cut, len(tt.msg), ev)
				}
				if cut > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("cut at %d: err = %v, want io.ErrUnexpectedEOF", cut, err)
				}
			}
			if d.Relation(relID) != before {
				t.Errorf("a failed decode changed the relation cache")
			}
		})
	}
}

func TestTrailingByteFails(t *testing.T) {
	for _, tt := range validMessages() {
		t.Run(tt.name, func(t *testing.T) {
			d := New()
			decodeAll(t, d, tt.setup...)
			_, err := d.Decode(append(bytes.Clone(tt.msg), 0))
			if err == nil || !strings.Contains(err.Error(), "1 trailing bytes at offset") {
				t.Fatalf("err = %v, want trailing bytes error", err)
			}
		})
	}
}

func TestFailedRelationKeepsCache(t *testing.T) {
	d := New()
	decodeAll(t, d, relationMsg(outbox))
	old := d.Relation(relID)

	changed := outboxRel(relID)
	changed.Name = "renamed"
	msg := relationMsg(changed)
	for _, bad := range [][]byte{msg[:len(msg)-1], append(bytes.Clone(msg), 1)} {
		if _, err := d.Decode(bad); err == nil {
			t.Fatalf("Decode(%q) succeeded", bad)
		}
		if d.Relation(relID) != old {
			t.Fatalf("failed relation message replaced the cache")
		}
	}
}

func TestEventIsReused(t *testing.T) {
	d := New()
	decodeAll(t, d, relationMsg(outbox))
	ev1, err := d.Decode(insertMsg(relID, text("1"), text("a"), text("b"), text("c"), text("d")))
	if err != nil {
		t.Fatal(err)
	}
	ev2, err := d.Decode(commitMsg(1, 2, t0))
	if err != nil {
		t.Fatal(err)
	}
	if ev1 != ev2 {
		t.Errorf("Decode returned a new Event: %p then %p", ev1, ev2)
	}
	if ev2.Relation != nil || ev2.Values != nil {
		t.Errorf("commit event kept insert fields: %+v", ev2)
	}
}

// TestNoAllocs guards the hot path: a transaction of inserts and logical
// messages with a repeated prefix decodes without heap allocations.
func TestNoAllocs(t *testing.T) {
	d := New()
	decodeAll(t, d, relationMsg(outbox))
	msgs := [][]byte{
		beginMsg(0x1000, t0, 9),
		insertMsg(relID, text("0f8fad5b-d9cb-469f-a165-70867728950e"), text("order"), text("o-1"), text("created"), text(`{"a":1}`)),
		insertMsg(relID, text("1"), null(), unchanged(), text(""), binval([]byte{1})),
		logicalMsg(true, 0x1000, "outbox", []byte("x")),
		commitMsg(0x1000, 0x1030, t0),
	}
	decodeAll(t, d, msgs...) // warm up reused storage
	allocs := testing.AllocsPerRun(100, func() {
		for _, m := range msgs {
			if _, err := d.Decode(m); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per transaction = %v, want 0", allocs)
	}
}

func TestPgTime(t *testing.T) {
	tests := []struct {
		us   int64
		want time.Time
	}{
		{0, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{1, time.Date(2000, 1, 1, 0, 0, 0, 1000, time.UTC)},
		{-1, time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC)},
		{800_000_000_123_456, time.Date(2025, 5, 8, 6, 13, 20, 123456000, time.UTC)},
	}
	for _, tt := range tests {
		if got := pgTime(tt.us); !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("pgTime(%d) = %v, want %v", tt.us, got, tt.want)
		}
	}
	// The extremes (PostgreSQL's -infinity and infinity) must not panic or wrap.
	if lo, hi := pgTime(-1<<63), pgTime(1<<63-1); !lo.Before(hi) {
		t.Errorf("pgTime extremes out of order: %v, %v", lo, hi)
	}
}

func TestMessageTypeString(t *testing.T) {
	for typ, want := range map[MessageType]string{TypeInsert: "insert", TypeStreamAbort: "stream abort", 'z': "unknown type 0x7a"} {
		if got := typ.String(); got != want {
			t.Errorf("%q.String() = %q, want %q", byte(typ), got, want)
		}
	}
}
