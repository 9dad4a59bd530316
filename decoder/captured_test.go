package decoder

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"
)

// The files under testdata/pg15 are pgoutput messages captured from
// PostgreSQL 15 by testdata/capture.sh, one hex-encoded message per line, in
// the order the slot produced them. LSNs, xids and times change with every
// capture, so the tests check relations between them, not their values.

func readCaptured(t testing.TB, name string) [][]byte {
	t.Helper()
	f, err := os.Open("testdata/pg15/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		msg, err := hex.DecodeString(sc.Text())
		if err != nil {
			t.Fatalf("%s line %d: %v", name, len(msgs)+1, err)
		}
		if bytes.Contains(msg, []byte(fuzzSep)) {
			t.Fatalf("%s line %d contains the fuzz separator: the sequence seed would split it", name, len(msgs)+1)
		}
		msgs = append(msgs, msg)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// row is a decoded insert, copied out of the reused Event.
type row struct {
	rel  *Relation
	vals []Value
}

func (r row) get(t *testing.T, col string) Value {
	t.Helper()
	i := r.rel.Column(col)
	if i < 0 {
		t.Fatalf("relation %s has no column %q", r.rel.QualifiedName(), col)
	}
	return r.vals[i]
}

func (r row) text(t *testing.T, col string) string {
	t.Helper()
	v := r.get(t, col)
	if v.Kind != KindText {
		t.Fatalf("column %s: kind %c, want text", col, v.Kind)
	}
	return string(v.Data)
}

func TestCapturedOutbox(t *testing.T) {
	d := New()
	var (
		types    strings.Builder
		rows     []row
		rels     []*Relation
		msgs     []LogicalMessage
		begin    Begin
		inTx     bool
		lastMsgT bool // transactional flag of the last message
	)
	for i, m := range readCaptured(t, "outbox.hex") {
		ev, err := d.Decode(m)
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		types.WriteByte(byte(ev.Type))
		switch ev.Type {
		case TypeBegin:
			begin, inTx = ev.Begin, true
			if begin.CommitTime.Before(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("message %d: commit time %v", i+1, begin.CommitTime)
			}
		case TypeCommit:
			c := ev.Commit
			if c.CommitLSN != begin.FinalLSN || c.EndLSN <= c.CommitLSN || !c.CommitTime.Equal(begin.CommitTime) {
				t.Errorf("message %d: commit %+v does not match begin %+v", i+1, c, begin)
			}
			inTx = false
		case TypeRelation:
			rels = append(rels, ev.Relation)
		case TypeInsert:
			vals := make([]Value, len(ev.Values))
			for j, v := range ev.Values {
				vals[j] = Value{Kind: v.Kind, Data: bytes.Clone(v.Data)}
			}
			rows = append(rows, row{ev.Relation, vals})
		case TypeMessage:
			msg := ev.Message
			msg.Content = bytes.Clone(msg.Content)
			msgs = append(msgs, msg)
			lastMsgT = msg.Transactional
			if msg.Transactional != inTx {
				t.Errorf("message %d: transactional=%v inside transaction=%v", i+1, msg.Transactional, inTx)
			}
		}
	}
	if got, want := types.String(), "BRIICBICBICBRICBMCBMICM"; got != want {
		t.Fatalf("message types = %s, want %s", got, want)
	}

	// The relation, then its replacement after ALTER TABLE ADD COLUMN.
	if len(rels) != 2 || rels[0] == rels[1] || rels[0].ID != rels[1].ID {
		t.Fatalf("relations = %v, want two values with one id", rels)
	}
	r0, r1 := rels[0], rels[1]
	if r0.QualifiedName() != "public.outbox" || r0.ReplicaIdentity != 'd' || len(r0.Columns) != 6 {
		t.Errorf("first relation = %+v", r0)
	}
	wantCols := []Column{
		{Key: true, Name: "id", TypeOID: 2950, TypeMod: -1},
		{Name: "aggregatetype", TypeOID: 25, TypeMod: -1},
		{Name: "aggregateid", TypeOID: 25, TypeMod: -1},
		{Name: "type", TypeOID: 25, TypeMod: -1},
		{Name: "payload", TypeOID: 3802, TypeMod: -1},
		{Name: "attachment", TypeOID: 17, TypeMod: -1},
		{Name: "tracing", TypeOID: 25, TypeMod: -1},
	}
	for i, c := range r1.Columns {
		if c != wantCols[i] {
			t.Errorf("column %d = %+v, want %+v", i, c, wantCols[i])
		}
	}
	if len(r1.Columns) != 7 || r1.Column("tracing") != 6 || r0.Column("tracing") != -1 {
		t.Errorf("second relation columns = %+v", r1.Columns)
	}
	if d.Relation(r0.ID) != r1 {
		t.Errorf("cache holds %p, want the newest relation %p", d.Relation(r0.ID), r1)
	}

	if len(rows) != 6 {
		t.Fatalf("got %d rows, want 6 (the aborted one must not appear)", len(rows))
	}
	for i, r := range rows {
		if want := "00000000-0000-0000-0000-00000000000" + string(rune('1'+i)); r.text(t, "id") != want {
			t.Errorf("row %d id = %s, want %s", i, r.text(t, "id"), want)
		}
		if (i < 4) != (r.rel == r0) {
			t.Errorf("row %d has relation %p; schema change is before row 5", i, r.rel)
		}
	}

	// 1: plain values and a bytea.
	r := rows[0]
	if r.text(t, "aggregatetype") != "order" || r.text(t, "aggregateid") != "o-1" || r.text(t, "type") != "created" ||
		r.text(t, "payload") != `{"total": 10}` {
		t.Errorf("row 1 = %q", r.vals)
	}
	if b, err := DecodeBytea(r.get(t, "attachment").Data); err != nil || !bytes.Equal(b, []byte{0, 0xff, 0x10}) {
		t.Errorf("row 1 attachment = %x, %v", b, err)
	}
	// 2: NULLs.
	for _, col := range []string{"aggregateid", "type", "payload", "attachment"} {
		if v := rows[1].get(t, col); v.Kind != KindNull || v.Data != nil {
			t.Errorf("row 2 %s = %c %q, want NULL", col, v.Kind, v.Data)
		}
	}
	// 3: unicode and empty values.
	r = rows[2]
	if r.text(t, "aggregateid") != "ünïcødé-日本-🚀" || r.text(t, "payload") != `{"msg": "héllo 🌍"}` {
		t.Errorf("row 3 = %q", r.vals)
	}
	if v := r.get(t, "type"); v.Kind != KindText || len(v.Data) != 0 {
		t.Errorf("row 3 type = %c %q, want empty text", v.Kind, v.Data)
	}
	if b, err := DecodeBytea(r.get(t, "attachment").Data); err != nil || len(b) != 0 {
		t.Errorf("row 3 attachment = %x, %v; want empty", b, err)
	}
	// 4: a TOASTed payload arrives whole.
	if p := rows[3].text(t, "payload"); len(p) != len(`{"blob": ""}`)+3000*32 || !strings.HasPrefix(p, `{"blob": "c4ca4238a0b923820dcc509a6f75849b`) {
		t.Errorf("row 4 payload: %d bytes, starts %.40q", len(p), p)
	}
	// 5 and 6: the new column.
	if rows[4].text(t, "tracing") != "trace-5" || rows[4].text(t, "payload") != `{"n": 5}` {
		t.Errorf("row 5 = %q", rows[4].vals)
	}
	if v := rows[5].get(t, "tracing"); v.Kind != KindNull {
		t.Errorf("row 6 tracing = %c, want NULL", v.Kind)
	}

	wantMsgs := []LogicalMessage{
		{Transactional: true, Prefix: "outbox", Content: []byte(`{"kind": "ping"}`)},
		{Transactional: true, Prefix: "outbox", Content: []byte(`{"kind": "with-row"}`)},
		{Transactional: false, Prefix: "audit", Content: []byte("plain text")},
	}
	if len(msgs) != len(wantMsgs) {
		t.Fatalf("got %d logical messages, want %d", len(msgs), len(wantMsgs))
	}
	for i, m := range msgs {
		w := wantMsgs[i]
		if m.Transactional != w.Transactional || m.Prefix != w.Prefix || !bytes.Equal(m.Content, w.Content) || m.LSN == 0 {
			t.Errorf("logical message %d = %+v, want %+v", i, m, w)
		}
	}
	if lastMsgT {
		t.Errorf("last logical message should be non-transactional")
	}
}

// TestCapturedMisc decodes what publish='insert' filters out (updates with
// unchanged TOAST and old keys, deletes, truncate, types, origins).
func TestCapturedMisc(t *testing.T) {
	d := New()
	var (
		types   strings.Builder
		rels    = map[string]*Relation{}
		relSeen = map[string]int{}
		origin  string
		beginAt time.Time
	)
	for i, m := range readCaptured(t, "misc.hex") {
		ev, err := d.Decode(m)
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		types.WriteByte(byte(ev.Type))
		switch ev.Type {
		case TypeBegin:
			beginAt = ev.Begin.CommitTime
		case TypeRelation:
			name := ev.Relation.QualifiedName()
			if rels[name] == ev.Relation {
				t.Errorf("message %d: relation %s not replaced by a new value", i+1, name)
			}
			rels[name] = ev.Relation
			relSeen[name]++
		case TypeInsert, TypeUpdate, TypeDelete:
			if ev.Relation == nil || ev.Relation != d.Relation(ev.Relation.ID) {
				t.Errorf("message %d: %v has relation %p", i+1, ev.Type, ev.Relation)
			}
			if ev.Type == TypeInsert && len(ev.Values) != len(ev.Relation.Columns) {
				t.Errorf("message %d: %d values for %d columns", i+1, len(ev.Values), len(ev.Relation.Columns))
			}
		case TypeTruncate:
			want := []uint32{rels["public.misc"].ID, rels["public.misc_full"].ID}
			if len(ev.Truncated) != 2 || ev.Truncated[0] != want[0] || ev.Truncated[1] != want[1] {
				t.Errorf("Truncated = %v, want %v", ev.Truncated, want)
			}
		case TypeOrigin:
			origin = ev.Origin
		}
	}
	// Messages are not filtered by publication, so the outbox ones appear too.
	const want = "BMCBMCM" + "BYRIC" + "BUC" + "BUC" + "BDC" + "BRIC" + "BUC" + "BDC" + "BYRRTC" + "BOYRIC"
	if got := types.String(); got != want {
		t.Fatalf("message types = %s, want %s", got, want)
	}
	if origin != "upstream" {
		t.Errorf("origin = %q, want upstream", origin)
	}
	if want := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC); !beginAt.Equal(want) {
		t.Errorf("origin transaction commit time = %v, want %v (pg_replication_origin_xact_setup)", beginAt, want)
	}
	if relSeen["public.misc"] != 3 || relSeen["public.misc_full"] != 2 {
		t.Errorf("relation messages = %v", relSeen)
	}
	full := rels["public.misc_full"]
	if full.ReplicaIdentity != 'f' || !full.Columns[0].Key || !full.Columns[1].Key {
		t.Errorf("misc_full = %+v, want replica identity full with every column a key", full)
	}
	misc := rels["public.misc"]
	if misc.ReplicaIdentity != 'd' || !misc.Columns[0].Key || misc.Columns[1].Key {
		t.Errorf("misc = %+v, want only id as key", misc)
	}
}

// TestCapturedUnchangedToast checks the first update of misc (note changed,
// big untouched) in detail, since Update leaves Event.Values empty.
func TestCapturedUnchangedToast(t *testing.T) {
	d := New()
	msgs := readCaptured(t, "misc.hex")
	var update []byte
	for _, m := range msgs {
		if _, err := d.Decode(m); err != nil {
			t.Fatal(err)
		}
		if m[0] == 'U' {
			update = m
			break
		}
	}
	// 'U', relid, 'N', 4 columns: id, note, big, m.
	rel := d.Relation(uint32(update[1])<<24 | uint32(update[2])<<16 | uint32(update[3])<<8 | uint32(update[4]))
	if rel == nil || rel.Name != "misc" || update[5] != 'N' {
		t.Fatalf("first update = %q", update)
	}
	r := reader{buf: update, off: 6}
	vals := make([]Value, len(rel.Columns))
	if err := d.tuple(&r, rel, vals); err != nil || r.finish() != nil {
		t.Fatalf("tuple: %v", err)
	}
	want := []Value{text("1"), text("second"), unchanged(), text("ok")}
	assertValues(t, vals, want)
}
