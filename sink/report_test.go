package sink

import (
	"errors"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/rs/zerolog"
)

// delivered builds the delivery report librdkafka hands back for a message produced
// with in as its opaque.
func delivered(in *inflight, topic string, partition int32, offset int64, err error) *kafka.Message {
	return &kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: partition, Offset: kafka.Offset(offset), Error: err},
		Key:            []byte("k"), Value: []byte("v"),
		Headers: []kafka.Header{{Key: "id", Value: []byte("e1")}},
		Opaque:  in,
	}
}

// TestReport: what rides with a message (its LSN token, commit time, size, kind)
// comes back on its report; a failed report also names the event and carries the
// record, an acknowledged one does not.
func TestReport(t *testing.T) {
	p := &Producer{log: zerolog.Nop()}
	committed := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	var r Report

	p.report(delivered(&inflight{kind: kindEvent, token: 0x1234, committed: committed, id: []byte("e1"), bytes: 2}, "outbox.event.order", 2, 41, nil), &r)
	if r.Token != 0x1234 || !r.Committed.Equal(committed) || r.Bytes != 2 || r.Topic != "outbox.event.order" ||
		r.Partition != 2 || r.Offset != 41 || r.Err != nil || r.ID != "" || r.Key != nil || r.DeadLetter || r.Control {
		t.Errorf("acknowledged event: %+v", r)
	}

	refused := kafka.NewError(kafka.ErrMsgSizeTooLarge, "too large", false)
	p.report(delivered(&inflight{kind: kindEvent, token: 0x2000, id: []byte("e2")}, "outbox.event.order", 0, -1, refused), &r)
	if r.Token != 0x2000 || !errors.Is(r.Err, refused) || r.ID != "e2" || string(r.Key) != "k" || string(r.Value) != "v" ||
		len(r.Headers) != 1 || r.Headers[0].Key != "id" {
		t.Errorf("refused event: %+v", r)
	}

	p.report(delivered(&inflight{kind: kindDeadLetter, token: 0x3000, id: []byte("e3")}, "outbox.dlq", 0, 7, nil), &r)
	if !r.DeadLetter || r.Control || r.ID != "e3" || r.Err != nil {
		t.Errorf("acknowledged dead letter: %+v, want it marked and named", r)
	}
	p.report(delivered(&inflight{kind: kindControl}, "pgoutbox.checkpoints", 0, 9, nil), &r)
	if !r.Control || r.DeadLetter || r.Token != 0 {
		t.Errorf("checkpoint record: %+v", r)
	}
	// Without an opaque (not one of pgoutbox's messages) the report still parses.
	p.report(delivered(nil, "t", 1, 3, nil), &r)
	if r.Topic != "t" || r.Offset != 3 || r.Token != 0 {
		t.Errorf("report without opaque: %+v", r)
	}
}

// TestBrokerState: "brokers down" and "authentication failed" are states: said once
// however often librdkafka repeats them, and over with the next acknowledged message.
func TestBrokerState(t *testing.T) {
	p := &Producer{log: zerolog.Nop()}
	var changes []string
	p.StateChanged = func(up bool, reason string) {
		if up {
			changes = append(changes, "up")
		} else {
			changes = append(changes, reason)
		}
	}
	down := kafka.NewError(kafka.ErrAllBrokersDown, "2/2 brokers are down", false)
	p.clientError(down)
	p.clientError(down)
	p.clientError(kafka.NewError(kafka.ErrTransport, "connection refused", false)) // logged only
	var r Report
	p.report(delivered(&inflight{}, "t", 0, 1, kafka.NewError(kafka.ErrMsgTimedOut, "timed out", false)), &r)
	p.report(delivered(&inflight{}, "t", 0, 1, nil), &r)
	p.report(delivered(&inflight{}, "t", 0, 2, nil), &r)
	p.clientError(kafka.NewError(kafka.ErrSaslAuthenticationFailed, "bad password", false))
	p.clientError(kafka.NewError(kafka.ErrAuthentication, "bad password", false))
	p.report(delivered(&inflight{}, "t", 0, 3, nil), &r)
	want := []string{"kafka brokers down", "up", "kafka authentication failed", "up"}
	if len(changes) != len(want) {
		t.Fatalf("state changes %q, want %q", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("state changes %q, want %q", changes, want)
		}
	}
}

// TestCheckpointRecord: the exactly-once checkpoint record survives its JSON form,
// the partial-transaction fields included, and a damaged one is an error naming the
// field, never a zero position.
func TestCheckpointRecord(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, c := range []checkpoint.Checkpoint{
		{Slot: "s", SystemID: "7400000000000000001", Database: "app", Timeline: 2, LSN: 0x16B3748, UpdatedAt: at},
		{Slot: "s", SystemID: "1", Database: "app", Timeline: 1, LSN: 0x100, PartialFinal: 0x200, PartialEvents: 3, UpdatedAt: at},
	} {
		got, err := unmarshalCheckpoint(marshalCheckpoint(c))
		if err != nil {
			t.Fatal(err)
		}
		if got.Slot != c.Slot || got.SystemID != c.SystemID || got.Database != c.Database || got.Timeline != c.Timeline ||
			got.LSN != c.LSN || got.PartialFinal != c.PartialFinal || got.PartialEvents != c.PartialEvents || !got.UpdatedAt.Equal(c.UpdatedAt) {
			t.Errorf("round trip of %+v gave %+v", c, got)
		}
	}
	for _, b := range []string{`{"slot":"s","lsn":"nonsense"}`, `{"slot":"s","lsn":"0/10","partial_final":"x/y","partial_events":1}`, `not json`} {
		if c, err := unmarshalCheckpoint([]byte(b)); err == nil {
			t.Errorf("%s: read as %+v, want an error", b, c)
		}
	}
}
