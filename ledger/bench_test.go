package ledger

import (
	"testing"
	"time"
)

// BenchmarkLedger measures Add, Done and Safe per event, with a Commit and
// Begin every 16 events.
func BenchmarkLedger(b *testing.B) {
	b.Run("in-order", func(b *testing.B) {
		tr := New(1<<10, 1<<10)
		final := LSN(10)
		if err := tr.Begin(final, time.Time{}); err != nil {
			b.Fatal(err)
		}
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			tok, err := tr.Add()
			if err != nil {
				b.Fatal(err)
			}
			if err := tr.Done(tok); err != nil {
				b.Fatal(err)
			}
			_ = tr.Safe()
			if n++; n%16 == 0 {
				final = commitBegin(b, tr, final)
			}
		}
	})
	// Every ack is for a random one of the last 256 events, so Done mostly
	// misses the head and searches the ring.
	b.Run("shuffled", func(b *testing.B) {
		const window = 256
		tr := New(1<<10, 1<<10)
		final := LSN(10)
		if err := tr.Begin(final, time.Time{}); err != nil {
			b.Fatal(err)
		}
		var toks [window]LSN
		n := 0
		for i := range toks {
			tok, err := tr.Add()
			if err != nil {
				b.Fatal(err)
			}
			toks[i] = tok
			if n++; n%16 == 0 {
				final = commitBegin(b, tr, final)
			}
		}
		x := uint32(2463534242)
		b.ReportAllocs()
		for b.Loop() {
			tok, err := tr.Add()
			if err != nil {
				b.Fatal(err)
			}
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			i := x % window
			if err := tr.Done(toks[i]); err != nil {
				b.Fatal(err)
			}
			toks[i] = tok
			_ = tr.Safe()
			if n++; n%16 == 0 {
				final = commitBegin(b, tr, final)
			}
		}
	})
}

// commitBegin commits the open transaction and begins the next one.
func commitBegin(b *testing.B, tr *Ledger, final LSN) LSN {
	if err := tr.Commit(final + 5); err != nil {
		b.Fatal(err)
	}
	if err := tr.Begin(final+10, time.Time{}); err != nil {
		b.Fatal(err)
	}
	return final + 10
}
