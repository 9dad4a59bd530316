package decoder

import (
	"bytes"
	"testing"
)

// fuzzSep splits one fuzz input into a sequence of messages, so that paths
// needing state (a Relation, then rows for it) get exercised. testdata/capture.sh
// joins captured sequences with it.
const fuzzSep = "\xfe\xfd\xfc"

func FuzzDecode(f *testing.F) {
	for _, tt := range validMessages() {
		f.Add(bytes.Join(append(tt.setup, tt.msg), []byte(fuzzSep)))
	}
	f.Add([]byte(nil))
	f.Add([]byte{'S', 0, 0, 0, 1, 1})
	// Files under testdata/fuzz/FuzzDecode (captured from PostgreSQL 15 by
	// testdata/capture.sh) are added by the fuzzing engine.

	f.Fuzz(func(t *testing.T, in []byte) {
		d := New()
		for _, msg := range bytes.Split(in, []byte(fuzzSep)) {
			checkDecode(t, d, msg)
		}
	})
}

// checkDecode decodes msg and asserts the invariants every result must hold.
func checkDecode(t *testing.T, d *Decoder, msg []byte) {
	t.Helper()
	var id uint32
	if len(msg) >= 5 {
		id = uint32(msg[1])<<24 | uint32(msg[2])<<16 | uint32(msg[3])<<8 | uint32(msg[4])
	}
	before := d.Relation(id)
	ev, err := d.Decode(msg)
	if err != nil {
		if ev != nil {
			t.Fatalf("Decode returned an event and error %v", err)
		}
		if d.Relation(id) != before {
			t.Fatalf("failed decode changed relation %d", id)
		}
		return
	}
	if ev.Type != MessageType(msg[0]) {
		t.Fatalf("Type = %v for tag %q", ev.Type, msg[0])
	}
	switch ev.Type {
	case TypeRelation:
		r := ev.Relation
		if r == nil || d.Relation(r.ID) != r || r == before && before != nil {
			t.Fatalf("relation %d not cached as a new value", id)
		}
		for i, c := range r.Columns {
			if r.Column(c.Name) != i {
				t.Fatalf("Column(%q) = %d, want %d", c.Name, r.Column(c.Name), i)
			}
		}
	case TypeInsert, TypeUpdate, TypeDelete:
		if ev.Relation == nil || ev.Relation != d.Relation(ev.Relation.ID) {
			t.Fatalf("%v without its cached relation", ev.Type)
		}
		if ev.Type == TypeInsert && len(ev.Values) != len(ev.Relation.Columns) {
			t.Fatalf("insert has %d values for %d columns", len(ev.Values), len(ev.Relation.Columns))
		}
		for i, v := range ev.Values {
			switch v.Kind {
			case KindNull, KindUnchanged:
				if v.Data != nil {
					t.Fatalf("value %d: kind %c with data", i, v.Kind)
				}
			case KindText, KindBinary:
				if len(v.Data) > len(msg) {
					t.Fatalf("value %d longer than the message", i)
				}
			default:
				t.Fatalf("value %d: kind 0x%02x", i, v.Kind)
			}
		}
	case TypeTruncate:
		if 6+4*len(ev.Truncated) != len(msg) {
			t.Fatalf("%d truncated ids in %d bytes", len(ev.Truncated), len(msg))
		}
	case TypeMessage:
		if len(ev.Message.Content) > len(msg) {
			t.Fatalf("content longer than the message")
		}
	}
}

// FuzzBytea checks that DecodeBytea never panics and that what it decodes
// round-trips through both output formats.
func FuzzBytea(f *testing.F) {
	for _, s := range []string{`\x`, `\x00ff10`, `\xDEADbeef`, `\x 0a 1b`, `\x0`, `abc\\def\001\377`, `\`, `\400`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := DecodeBytea(in)
		if err != nil {
			return
		}
		for _, enc := range [][]byte{encodeHexBytea(out), encodeEscapeBytea(out)} {
			back, err := DecodeBytea(enc)
			if err != nil || !bytes.Equal(back, out) {
				t.Fatalf("DecodeBytea(%q) = %x, %v; want %x", enc, back, err, out)
			}
		}
	})
}
