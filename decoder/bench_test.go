package decoder

import "testing"

// BenchmarkDecodeInsert decodes a one-row outbox transaction (Begin, Insert,
// Commit) per iteration, the publisher's hot path.
func BenchmarkDecodeInsert(b *testing.B) {
	d := New()
	if _, err := d.Decode(relationMsg(outbox)); err != nil {
		b.Fatal(err)
	}
	msgs := [][]byte{
		beginMsg(0x16B3748, t0, 747),
		insertMsg(relID,
			text("0f8fad5b-d9cb-469f-a165-70867728950e"), text("order"), text("o-1"), text("created"),
			text(`{"orderId": "o-1", "customer": "c-42", "lines": [{"sku": "A-1", "qty": 2}], "total": 19.98}`)),
		commitMsg(0x16B3748, 0x16B3778, t0),
	}
	var n int64
	for _, m := range msgs {
		n += int64(len(m))
	}
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if _, err := d.Decode(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkDecodeRelation measures a schema (re)load, which allocates.
func BenchmarkDecodeRelation(b *testing.B) {
	d := New()
	msg := relationMsg(outbox)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCaptured decodes the captured PostgreSQL 15 outbox stream,
// including a 96 KB TOASTed payload.
func BenchmarkDecodeCaptured(b *testing.B) {
	msgs := readCaptured(b, "outbox.hex")
	var n int64
	for _, m := range msgs {
		n += int64(len(m))
	}
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		d := New()
		for _, m := range msgs {
			if _, err := d.Decode(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}
