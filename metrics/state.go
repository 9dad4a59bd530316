package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// ReasonStandingBy is the not-ready reason of an instance that waits because another
// process streams from the slot.
const ReasonStandingBy = "slot is active in another process"

// IsReady reports whether every readiness condition holds and, when one does not,
// why, in one line. The service manager notifier reads it; /readyz answers from the
// same state.
func (m *Metrics) IsReady() (bool, string) {
	ready, reasons, _ := m.State()
	return ready, strings.Join(reasons, "; ")
}

// IsStandingBy reports whether this instance waits for a slot another instance
// streams from: a healthy state for a standby, which must count as started and alive.
func (m *Metrics) IsStandingBy() bool {
	_, _, by := m.State()
	return by
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

// Alive reports whether the replication loop made progress within stale. An instance
// that has not started its loop yet, or stands by, is alive too: neither should be
// restarted for a loop it does not run. /healthz and the systemd watchdog both ask.
func (m *Metrics) Alive(stale time.Duration) bool {
	last := m.LastProgress()
	if last.IsZero() || m.IsStandingBy() {
		return true
	}
	return time.Since(last) <= stale
}

// readyGauge exports what /readyz alone does not show a dashboard or an alert:
// pgoutbox_ready is 1 exactly when every readiness condition holds.
func (m *Metrics) readyGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgoutbox_ready", Help: "1 while streaming with reachable Kafka brokers and a working checkpoint: what /readyz answers 200 for."},
		func() float64 {
			if ready, _ := m.IsReady(); ready {
				return 1
			}
			return 0
		})
}
