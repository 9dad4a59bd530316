package relay

import (
	"fmt"
	"time"
)

// ackStall is how long events may wait in flight with no delivery report at all
// before /readyz says Kafka does not acknowledge them. A partition that drops
// packets silently leaves librdkafka's connection looking up and its requests
// waiting for socket.timeout.ms (60s) before it even reconnects, so its "all
// brokers down" comes a minute or more late, and never for a shorter cut (e2e
// TestSilentPartitionKafka saw /readyz ready through a minute's cut).
const ackStall = 10 * time.Second

// ackWatch notices deliveries that stopped.
type ackWatch struct {
	// last returns when the last delivery report came; nil: do not watch.
	last    func() time.Time
	waiting time.Time // since when events are in flight with no report since
	stalled bool
}

// checkAcks marks the relay not ready while events are in flight and Kafka has
// reported none for ackStall, and ready again once it does. confirm calls it, at
// least once per status interval, also while waiting on Kafka.
func (l *loop) checkAcks(now time.Time) {
	w := &l.acks
	if w.last == nil {
		return
	}
	inFlight := l.led.InFlight()
	if inFlight == 0 {
		w.waiting = time.Time{}
	} else {
		if w.waiting.IsZero() {
			w.waiting = now
		}
		if last := w.last(); last.After(w.waiting) {
			w.waiting = last
		}
	}
	stalled := inFlight > 0 && now.Sub(w.waiting) >= ackStall
	if stalled == w.stalled {
		return
	}
	w.stalled = stalled
	if stalled {
		silent := now.Sub(w.waiting).Round(time.Second)
		l.log.Warn().Int("in_flight", inFlight).Dur("silent", silent).Msg("kafka acknowledges nothing; holding events (a network partition?)")
		l.m.NotReady("acks", fmt.Sprintf("kafka acknowledged nothing for %s with %d events in flight", silent, inFlight))
		return
	}
	l.log.Info().Msg("kafka acknowledges events again")
	l.m.Ready("acks")
}
