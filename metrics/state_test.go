package metrics

import (
	"testing"
	"time"
)

// TestState: the accessors the service notifier reads, and the gauges that export
// them, follow the readiness conditions, progress and the backfill gauge.
func TestState(t *testing.T) {
	m := New("test")
	check := func(when string, ready, standby bool) {
		t.Helper()
		r, _ := m.IsReady()
		if r != ready || m.IsStandingBy() != standby {
			t.Errorf("%s: ready %v standing by %v, want %v %v", when, r, m.IsStandingBy(), ready, standby)
		}
		if got := value(t, m, "pgoutbox_ready"); got != b2f(ready) {
			t.Errorf("%s: pgoutbox_ready %v", when, got)
		}
		if got := value(t, m, "pgoutbox_standing_by"); got != b2f(standby) {
			t.Errorf("%s: pgoutbox_standing_by %v", when, got)
		}
	}
	if _, reason := m.IsReady(); reason != "starting" {
		t.Errorf("new metrics: reason %q", reason)
	}
	check("new", false, false)
	if !m.Alive(time.Millisecond) {
		t.Error("not alive before the loop started")
	}
	m.Ready("streaming")
	m.Progress()
	check("streaming", true, false)
	if !m.Alive(time.Minute) {
		t.Error("not alive right after a turn")
	}
	time.Sleep(20 * time.Millisecond)
	if m.Alive(10 * time.Millisecond) {
		t.Error("alive with a loop stale past the limit")
	}
	m.NotReady("streaming", ReasonStandingBy)
	m.StandingBy(true)
	check("standing by", false, true)
	if !m.Alive(10 * time.Millisecond) {
		t.Error("a standby is not alive")
	}
	m.StandingBy(false)
	m.NotReady("kafka", "kafka brokers down")
	check("brokers down", false, false)
	if m.Backfilling() {
		t.Error("backfilling before a backfill")
	}
	m.BackfillRunning.Set(1)
	if !m.Backfilling() {
		t.Error("not backfilling while the backfill gauge is 1")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
