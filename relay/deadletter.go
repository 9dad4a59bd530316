package relay

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

// deadLetterRecord is the value of a dead-letter record: enough to find the row,
// understand the failure and republish it by hand.
type deadLetterRecord struct {
	ID              string  `json:"id"`
	Topic           string  `json:"topic"`
	Key             *string `json:"key"`
	Error           string  `json:"error"`
	Payload         *string `json:"payload,omitempty"`
	PayloadEncoding string  `json:"payload_encoding,omitempty"` // "text" or "base64"
	PayloadSize     int     `json:"payload_size"`
	PayloadPrefix   string  `json:"payload_prefix,omitempty"` // when the payload does not fit
	CommitLSN       string  `json:"commit_lsn"`
	CommitTime      string  `json:"commit_time,omitempty"`
}

// deadLetterPrefix is how much of a payload that does not fit is kept.
const deadLetterPrefix = 1024

// deadLetter builds the dead-letter message for a row, to topic, carrying payloads
// up to maxPayload bytes whole. It allocates; it is the rare path.
func deadLetter(rowErr *outbox.RowError, topic string, maxPayload int, token source.LSN, committed time.Time) *sink.Message {
	rec := deadLetterRecord{
		ID:          rowErr.ID,
		Topic:       rowErr.Topic,
		Error:       rowErr.Reason,
		PayloadSize: len(rowErr.Payload),
		CommitLSN:   token.String(),
	}
	if !committed.IsZero() {
		rec.CommitTime = committed.UTC().Format(time.RFC3339Nano)
	}
	if rowErr.Key != nil {
		k := string(rowErr.Key)
		rec.Key = &k
	}
	if p := rowErr.Payload; p != nil {
		enc, text := "text", string(p)
		if !utf8.Valid(p) {
			enc, text = "base64", base64.StdEncoding.EncodeToString(p)
		}
		rec.PayloadEncoding = enc
		if len(text) <= maxPayload {
			rec.Payload = &text
		} else {
			prefix := text[:deadLetterPrefix]
			for enc == "text" && !utf8.ValidString(prefix) {
				prefix = prefix[:len(prefix)-1]
			}
			rec.PayloadPrefix = prefix
		}
	}
	value, _ := json.Marshal(rec) // strings and ints only: cannot fail
	return &sink.Message{
		Topic: topic,
		Key:   rowErr.Key,
		Value: value,
		Headers: []sink.Header{
			{Key: "id", Value: []byte(rowErr.ID)},
			{Key: "pgoutbox.topic", Value: []byte(rowErr.Topic)},
			{Key: "pgoutbox.error", Value: []byte(rowErr.Reason)},
		},
		Timestamp:  committed,
		ID:         []byte(rowErr.ID),
		Token:      token,
		Committed:  committed,
		DeadLetter: true,
	}
}

// deadLetterMax is the largest payload a dead-letter record carries whole: half of
// the producer's message.max.bytes, leaving room for the rest of the record.
func deadLetterMax(props map[string]string) int {
	max := 1000000
	if v, ok := props["message.max.bytes"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			max = n
		}
	}
	return max/2 - 4096
}
