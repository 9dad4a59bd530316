package sink

import (
	"fmt"
	"testing"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// TestErrorClasses checks how librdkafka errors, wrapped as pgoutbox wraps them,
// decide what happens: an error policy for the event (Permanent), a stop with
// what to grant (Unauthorized), a rebuilt producer (Fatal), or a plain restart.
func TestErrorClasses(t *testing.T) {
	for _, c := range []struct {
		code                    kafka.ErrorCode
		permanent, unauthorized bool
	}{
		{code: kafka.ErrMsgSizeTooLarge, permanent: true},
		{code: kafka.ErrUnknownTopicOrPart, permanent: true},
		{code: kafka.ErrTopicAuthorizationFailed, permanent: true, unauthorized: true},
		{code: kafka.ErrTransactionalIDAuthorizationFailed, unauthorized: true},
		{code: kafka.ErrClusterAuthorizationFailed, unauthorized: true},
		{code: kafka.ErrMsgTimedOut},
		{code: kafka.ErrPurgeQueue},
		{code: kafka.ErrAllBrokersDown},
	} {
		err := fmt.Errorf("deliver: %w", &DeliveryError{ID: "1", Topic: "t", Err: kafka.NewError(c.code, "x", false)})
		if got := Permanent(err); got != c.permanent {
			t.Errorf("%s: Permanent = %v, want %v", c.code, got, c.permanent)
		}
		if got := Unauthorized(err); got != c.unauthorized {
			t.Errorf("%s: Unauthorized = %v, want %v", c.code, got, c.unauthorized)
		}
		if Fatal(err) {
			t.Errorf("%s: Fatal on a non-fatal error", c.code)
		}
	}
	fatal := kafka.NewError(kafka.ErrMsgSizeTooLarge, "x", true)
	if !Fatal(fatal) || Permanent(fatal) {
		t.Errorf("a fatal error: Fatal = %v, Permanent = %v; want true, false", Fatal(fatal), Permanent(fatal))
	}
	for _, code := range []kafka.ErrorCode{kafka.ErrPurgeQueue, kafka.ErrPurgeInflight} {
		if err := kafka.NewError(code, "x", false); !Purged(err) || Permanent(err) {
			t.Errorf("%s: Purged = %v, Permanent = %v; want true, false", code, Purged(err), Permanent(err))
		}
	}
	if Purged(kafka.NewError(kafka.ErrMsgTimedOut, "x", false)) {
		t.Error("a timed-out message counted as purged")
	}
	if Permanent(fmt.Errorf("plain")) || Unauthorized(fmt.Errorf("plain")) || Fatal(fmt.Errorf("plain")) || Purged(fmt.Errorf("plain")) {
		t.Error("a non-Kafka error was classified")
	}
}
