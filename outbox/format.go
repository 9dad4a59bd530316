package outbox

import "fmt"

// Format is the byte format of a record's key, value or headers, named after the Kafka
// Connect converter whose bytes it reproduces.
type Format string

const (
	// FormatRaw is Kafka's StringConverter (and SimpleHeaderConverter for text): a
	// column's text as PostgreSQL prints it, a bytea's bytes as they are. The default.
	FormatRaw Format = "raw"
	// FormatJSON is Kafka's JsonConverter with schemas.enable=false: the Connect value
	// Debezium makes of the column, as JSON (a text column is a quoted JSON string).
	FormatJSON Format = "json"
	// FormatJSONEnvelope is JsonConverter with schemas.enable=true:
	// {"schema":{…},"payload":…}.
	FormatJSONEnvelope Format = "json-envelope"
)

// ParseFormat accepts "", raw, json or json-envelope; "" is raw.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", FormatRaw:
		return FormatRaw, nil
	case FormatJSON, FormatJSONEnvelope:
		return Format(s), nil
	}
	return "", fmt.Errorf("format %q: want raw, json or json-envelope", s)
}

func (f Format) raw() bool { return f == "" || f == FormatRaw }

// envelopePayload is the payload's field name in Debezium's envelope struct
// (EventRouterDelegate.ENVELOPE_PAYLOAD, EventRouterDelegate.java:67).
const envelopePayload = "payload"

// envelopePrefix returns `{"schema":<s>,"payload":` — JsonSchema.Envelope writes the
// schema first, then the payload.
func envelopePrefix(s *schema) []byte {
	b := append([]byte(`{"schema":`), appendSchemaJSON(nil, s)...)
	return append(b, `,"payload":`...)
}
