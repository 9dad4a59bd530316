package relay

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/decoder"
	pt "github.com/pgoutbox/pgoutbox/internal/pgoutputtest"
	"github.com/pgoutbox/pgoutbox/ledger"
	"github.com/pgoutbox/pgoutbox/metrics"
	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// nopProducer takes every message and keeps nothing.
type nopProducer struct{ n int }

func (p *nopProducer) Produce(*sink.Message) error { p.n++; return nil }

// BenchmarkLoopEvent is pgoutbox's own per-event work on the hot path, one-event
// transactions: decode Begin, Insert and Commit, map the row, add it to the ledger,
// hand it to the producer (a no-op here: librdkafka's cost is not pgoutbox's code),
// then the delivery report recorded in the ledger and the metrics. Keep it at zero
// allocations.
func BenchmarkLoopEvent(b *testing.B) {
	rows, err := outbox.NewMapper(outbox.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	m := metrics.New("bench")
	led := ledger.New(1<<20, maxTxnsInFlight)
	led.Reset(1)
	reps := &reports{led: led, m: m, log: zerolog.Nop()}
	prod := &nopProducer{}
	l := &loop{cfg: loopConfig{statusInterval: time.Hour, maxInFlight: 1 << 20}, clock: realClock{}, log: zerolog.Nop(), m: m,
		prod: prod, led: led, com: ackCommitter{}, dec: decoder.New(), rows: rows,
		cp: checkpoint.Checkpoint{Slot: "s", LSN: 1}}
	l.start()
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := l.handle(ctx, &source.Message{Data: relationMsg()}); err != nil {
		b.Fatal(err)
	}
	insert := &source.Message{Data: insertMsg("6f1c0e7e-8f5c-4c8e-9a4e-3a1f2b3c4d5e")}
	// The walsender's work, done before the clock starts.
	begins, commits := make([]source.Message, b.N), make([]source.Message, b.N)
	for i := range b.N {
		final := source.LSN(0x1000 + i*0x100)
		begins[i].Data = pt.Begin(final, at, uint32(i))
		commits[i].Data = pt.Commit(final, final+0x50, at)
	}
	rep := &sink.Report{Topic: "outbox.event.order", Bytes: 100}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		final := source.LSN(0x1000 + i*0x100)
		for _, msg := range [3]*source.Message{&begins[i], insert, &commits[i]} {
			if err := l.handle(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		rep.Token = final
		if err := reps.handle(rep); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 0 {
			if _, err := led.Confirm(led.Safe()); err != nil {
				b.Fatal(err)
			}
		}
	}
}
