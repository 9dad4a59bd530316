package relay

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/ledger"
	"github.com/pgoutbox/pgoutbox/metrics"
	"github.com/pgoutbox/pgoutbox/sink"
)

// TestReportsClassify: each kind of delivery report goes where it belongs: the
// ledger (an ack, a refusal the loop settles), a restart (transient, purged), a stop
// (a refused dead letter), or the refused-batch suspects.
func TestReportsClassify(t *testing.T) {
	purged := kafka.NewError(kafka.ErrPurgeQueue, "Local: Purged in queue", false)
	timedOut := kafka.NewError(kafka.ErrMsgTimedOut, "Local: Message timed out", false)
	for _, c := range []struct {
		name        string
		exactlyOnce bool
		abandoned   bool
		rep         sink.Report
		// want: "" the report is recorded and handle returns nil; otherwise a part
		// of the error. permanent: the error stops pgoutbox.
		want      string
		permanent bool
		refusal   bool // the ledger holds a refusal for the loop
		suspect   bool
		drained   bool // the event no longer awaits a report
	}{
		{name: "ack", rep: sink.Report{Topic: "t"}, drained: true},
		{name: "dead letter acked", rep: sink.Report{Topic: "dlq", DeadLetter: true}, drained: true},
		{name: "checkpoint record", rep: sink.Report{Control: true, Err: purged}},
		{name: "refused", rep: sink.Report{Topic: "t", ID: "e1", Err: errTooLarge}, refusal: true, drained: true},
		{name: "refused in a Kafka transaction", exactlyOnce: true, rep: sink.Report{Topic: "t", ID: "e1", Err: errTooLarge}, want: "open transaction", suspect: true},
		{name: "transient", rep: sink.Report{Topic: "t", ID: "e1", Err: timedOut}, want: "resuming from the checkpoint"},
		{name: "purged", rep: sink.Report{Topic: "t", ID: "e1", Err: purged}, want: "before delivery"},
		{name: "purged dead letter is no refusal", rep: sink.Report{Topic: "dlq", DeadLetter: true, ID: "e1", Err: purged}, want: "before delivery"},
		{name: "purged by a deliberate abort", abandoned: true, rep: sink.Report{Topic: "t", ID: "e1", Err: purged}},
		{name: "dead letter refused", rep: sink.Report{Topic: "dlq", DeadLetter: true, ID: "e1", Err: errTooLarge}, want: "dead-letter topic dlq refused", permanent: true},
		{name: "after a fatal error", rep: sink.Report{Topic: "t", ID: "e1", Err: errTooLarge, AfterFatal: true}, suspect: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			led := ledger.New(10, 10)
			led.Reset(100)
			if err := led.Begin(200, time.Time{}); err != nil {
				t.Fatal(err)
			}
			token, _ := led.Add()
			r := &reports{led: led, m: metrics.New("test"), log: zerolog.Nop(), exactlyOnce: c.exactlyOnce}
			r.abandoned.Store(c.abandoned)
			rep := c.rep
			rep.Token = token
			err := r.handle(&rep)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("handle: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("handle: %v, want an error with %q", err, c.want)
			case err != nil && IsPermanent(err) != c.permanent:
				t.Fatalf("handle: %v permanent %v, want %v", err, IsPermanent(err), c.permanent)
			}
			if got := len(led.TakeRefusals()) == 1; got != c.refusal {
				t.Fatalf("refusal recorded %v, want %v", got, c.refusal)
			}
			if got := len(r.refusedBatch()) == 1; got != c.suspect {
				t.Fatalf("suspect recorded %v, want %v", got, c.suspect)
			}
			if got := led.Drained(); got != c.drained {
				t.Fatalf("drained %v, want %v", got, c.drained)
			}
		})
	}
}

// TestReportsUnknownToken: a report the ledger does not expect is an error, not
// ignored: it means the counts diverged.
func TestReportsUnknownToken(t *testing.T) {
	led := ledger.New(10, 10)
	r := &reports{led: led, m: metrics.New("test"), log: zerolog.Nop()}
	err := r.handle(&sink.Report{Token: 42, Topic: "t"})
	if !errors.Is(err, ledger.ErrUnknownToken) {
		t.Fatalf("error %v, want ErrUnknownToken", err)
	}
}
