package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// ReasonStandingBy is the not-ready reason of an instance that waits because another
// process streams from the slot. StandingBy recognises it, so the relay must use this
// constant when it stands by.
const ReasonStandingBy = "slot is active in another process"

// Ready reports whether pgoutbox streams with reachable brokers and, when it does
// not, why. The service manager notifier reads it; /readyz answers from the same
// atomics.
func (m *Metrics) Ready() (bool, string) {
	reason, _ := m.notReady.Load().(string)
	if m.ready.Load() {
		return true, ""
	}
	return false, reason
}

// StandingBy reports whether this instance waits for a slot another instance streams
// from: a healthy state for a standby, which must count as started and alive.
func (m *Metrics) StandingBy() bool {
	ready, reason := m.Ready()
	return !ready && reason == ReasonStandingBy
}

// Backfilling reports whether --backfill is publishing existing rows: the relay is
// working, though it sets itself ready only once the backfill is done and it streams.
func (m *Metrics) Backfilling() bool {
	var d dto.Metric
	if err := m.BackfillRunning.Write(&d); err != nil {
		return false
	}
	return d.GetGauge().GetValue() > 0
}

// Alive reports whether the replication loop turned within stale. An instance that
// has not started its loop yet, or stands by, is alive too: neither should be
// restarted for not turning a loop it does not run.
func (m *Metrics) Alive(stale time.Duration) bool {
	last := m.loop.Load()
	if last == 0 || m.StandingBy() {
		return true
	}
	return time.Since(time.Unix(0, last)) <= stale
}

// RegisterState registers the states an alert or a dashboard needs and /readyz
// alone does not show: pgoutbox_ready (1 exactly when /readyz answers 200) and
// pgoutbox_standing_by (1 while another process streams from the slot). Call it
// once, after New.
func (m *Metrics) RegisterState() {
	b := func(f func() bool) func() float64 {
		return func() float64 {
			if f() {
				return 1
			}
			return 0
		}
	}
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgoutbox_ready", Help: "1 while streaming with reachable Kafka brokers: what /readyz answers 200 for."},
			b(func() bool { ready, _ := m.Ready(); return ready })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgoutbox_standing_by", Help: "1 while this instance waits because another process streams from the slot."},
			b(m.StandingBy)),
	)
}
