package relay

import (
	"strings"
	"testing"
	"time"
)

// stallReason returns the readiness reason about unacknowledged events, if any.
func (h *harness) stallReason() string {
	_, reasons, _ := h.m.State()
	for _, r := range reasons {
		if strings.Contains(r, "acknowledged nothing") {
			return r
		}
	}
	return ""
}

// TestAckStall: events in flight with no delivery report for ackStall make the
// relay not ready, a report makes it ready again; an event produced after a long
// idle time is not taken for a stall.
func TestAckStall(t *testing.T) {
	h := newHarness(t, 100)
	var lastReport time.Time
	h.l.acks.last = func() time.Time { return lastReport }
	h.clock.advance(time.Hour) // idle: no report for an hour
	h.stream.push(relationMsg())
	h.stream.push(txn(0x2000, 0x2050, "e1")...)
	h.until(10, "the event produced", func() bool { return len(h.prod.messages()) == 1 })
	h.statusDue()
	h.turns(1)
	if r := h.stallReason(); r != "" {
		t.Fatalf("not ready right after producing (last report an hour ago): %s", r)
	}
	for range 9 {
		h.statusDue()
		h.turns(1)
	}
	if r := h.stallReason(); r != "" {
		t.Fatalf("not ready after %s: %s", 9*time.Second, r)
	}
	for range 3 {
		h.statusDue()
		h.turns(1)
	}
	if r := h.stallReason(); !strings.Contains(r, "with 1 events in flight") {
		t.Fatalf("no stall reported after %s without a report; reasons: %q", 12*time.Second, r)
	}
	lastReport = h.clock.Now()
	h.ackAll()
	h.statusDue()
	h.turns(1)
	if r := h.stallReason(); r != "" {
		t.Fatalf("still not ready after the ack: %s", r)
	}
}
