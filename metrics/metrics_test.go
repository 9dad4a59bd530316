package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	dto "github.com/prometheus/client_model/go"
)

// gather returns the registry's metric families by name.
func gather(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	return byName
}

// value returns the value of the series of name whose labels include labels (name,
// value pairs), failing the test when there is no such series.
func value(t *testing.T, m *Metrics, name string, labels ...string) float64 {
	t.Helper()
	mf, ok := gather(t, m)[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, s := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range s.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue()
		case s.Gauge != nil:
			return s.Gauge.GetValue()
		case s.Untyped != nil:
			return s.Untyped.GetValue()
		case s.Histogram != nil:
			return float64(s.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series of %s with labels %q", name, labels)
	return 0
}

func TestMetricNamesArePrefixed(t *testing.T) {
	m := New("v1.2.3")
	// Vectors show up in Gather only once they have a series.
	m.Published("outbox.event.Order", 10)
	m.SkippedChanges.WithLabelValues("update").Inc()
	m.CommitToAck.Observe(0.01)

	families := gather(t, m)
	ours := 0
	for name := range families {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		ours++
		if !strings.HasPrefix(name, "pgoutbox_") {
			t.Errorf("metric %s does not start with pgoutbox_", name)
		}
	}
	for _, name := range []string{
		"pgoutbox_events_published_total", "pgoutbox_bytes_published_total", "pgoutbox_events_in_flight",
		"pgoutbox_received_lsn", "pgoutbox_confirmed_lsn", "pgoutbox_checkpoint_lsn", "pgoutbox_server_lsn",
		"pgoutbox_replication_lag_bytes", "pgoutbox_replication_lag_seconds", "pgoutbox_commit_to_ack_seconds",
		"pgoutbox_producer_errors_total", "pgoutbox_reconnects_total", "pgoutbox_dead_lettered_total",
		"pgoutbox_failed_events_total", "pgoutbox_skipped_changes_total", "pgoutbox_streaming",
		"pgoutbox_kafka_brokers_up", "pgoutbox_transactions_total", "pgoutbox_build_info",
	} {
		if _, ok := families[name]; !ok {
			t.Errorf("metric %s is not registered", name)
		}
	}
	if ours < 19 {
		t.Errorf("only %d pgoutbox metrics gathered", ours)
	}
}

func TestNewDefaults(t *testing.T) {
	m := New("v1.2.3")
	if got := value(t, m, "pgoutbox_build_info", "version", "v1.2.3"); got != 1 {
		t.Errorf("build_info = %v, want 1", got)
	}
	if got := value(t, m, "pgoutbox_kafka_brokers_up"); got != 1 {
		t.Errorf("kafka_brokers_up starts at %v, want 1", got)
	}
	for _, kind := range []string{"message", "fatal", "transient"} {
		if got := value(t, m, "pgoutbox_producer_errors_total", "kind", kind); got != 0 {
			t.Errorf("producer_errors_total{kind=%s} = %v, want 0", kind, got)
		}
	}
	// Two instances do not share a registry.
	if New("x").Registry == m.Registry {
		t.Error("New returned a shared registry")
	}
}

func TestPublished(t *testing.T) {
	m := New("dev")
	m.Published("orders", 100)
	m.Published("orders", 50)
	m.Published("customers", 7)
	for _, c := range []struct {
		name, topic string
		want        float64
	}{
		{"pgoutbox_events_published_total", "orders", 2},
		{"pgoutbox_bytes_published_total", "orders", 150},
		{"pgoutbox_events_published_total", "customers", 1},
		{"pgoutbox_bytes_published_total", "customers", 7},
	} {
		if got := value(t, m, c.name, "topic", c.topic); got != c.want {
			t.Errorf("%s{topic=%q} = %v, want %v", c.name, c.topic, got, c.want)
		}
	}
	if n := len(gather(t, m)["pgoutbox_events_published_total"].GetMetric()); n != 2 {
		t.Errorf("events_published_total has %d series, want 2", n)
	}
}

func TestConfirmedDrivesLag(t *testing.T) {
	m := New("dev")
	if got := value(t, m, "pgoutbox_replication_lag_seconds"); got != 0 {
		t.Errorf("lag before any confirm = %v, want 0", got)
	}

	m.Confirmed(pglogrepl.LSN(0x16B3748), time.Time{})
	if got := value(t, m, "pgoutbox_confirmed_lsn"); got != 0x16B3748 {
		t.Errorf("confirmed_lsn = %v, want %v", got, float64(0x16B3748))
	}
	if got := value(t, m, "pgoutbox_replication_lag_seconds"); got != 0 {
		t.Errorf("lag while caught up = %v, want 0", got)
	}

	m.Confirmed(pglogrepl.LSN(0x2000000), time.Now().Add(-time.Hour))
	if got := value(t, m, "pgoutbox_replication_lag_seconds"); got < 3600 || got > 2*3600 {
		t.Errorf("lag for a commit an hour ago = %v, want about 3600", got)
	}
	if got := value(t, m, "pgoutbox_confirmed_lsn"); got != 0x2000000 {
		t.Errorf("confirmed_lsn = %v, want %v", got, float64(0x2000000))
	}

	m.Confirmed(pglogrepl.LSN(0x2000100), time.Time{})
	if got := value(t, m, "pgoutbox_replication_lag_seconds"); got != 0 {
		t.Errorf("lag after catching up = %v, want 0", got)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestHandlerMetrics(t *testing.T) {
	m := New("v9")
	m.Published("orders", 3)
	m.InFlight.Set(17)
	code, body := get(t, m.Handler(time.Minute), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"# TYPE pgoutbox_events_in_flight gauge",
		"pgoutbox_events_in_flight 17",
		`pgoutbox_events_published_total{topic="orders"} 1`,
		`pgoutbox_build_info{version="v9"} 1`,
		"pgoutbox_replication_lag_seconds 0",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestHealthz(t *testing.T) {
	m := New("dev")
	code, body := get(t, m.Handler(time.Hour), "/healthz")
	if code != http.StatusOK || !strings.Contains(body, "starting") {
		t.Errorf("/healthz before the loop turned: %d %q, want 200 starting", code, body)
	}

	m.Progress()
	code, body = get(t, m.Handler(time.Hour), "/healthz")
	if code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz right after a turn: %d %q, want 200 ok", code, body)
	}

	// With a 1ns stale limit the turn is stale as soon as the clock moves on.
	last := m.loop.Load()
	for time.Now().UnixNano() <= last+1 {
		runtime.Gosched()
	}
	code, body = get(t, m.Handler(time.Nanosecond), "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no progress") {
		t.Errorf("/healthz with a stale loop: %d %q, want 503", code, body)
	}

	// A loop that last turned long ago, and then turns again.
	m.loop.Store(time.Now().Add(-10 * time.Minute).UnixNano())
	h := m.Handler(2 * time.Minute)
	if code, body = get(t, h, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "10m") {
		t.Errorf("/healthz 10 minutes after the last turn: %d %q, want 503 naming the age", code, body)
	}
	m.Progress()
	if code, body = get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after the loop turned again: %d %q, want 200", code, body)
	}
}

func TestReadyz(t *testing.T) {
	m := New("dev")
	h := m.Handler(time.Minute)
	code, body := get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: starting") {
		t.Errorf("/readyz at start: %d %q, want 503 not ready: starting", code, body)
	}

	m.Ready("streaming")
	code, body = get(t, h, "/readyz")
	if code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz when ready: %d %q, want 200 ready", code, body)
	}

	m.NotReady("kafka", "kafka brokers down")
	m.NotReady("checkpoint", "checkpoint: no space left on device")
	code, body = get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "kafka brokers down") || !strings.Contains(body, "no space") {
		t.Errorf("/readyz after losing the brokers and the disk: %d %q, want 503 with both reasons", code, body)
	}
	m.Ready("kafka")
	if code, _ = get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the checkpoint still failing: %d, want 503", code)
	}
	m.Ready("checkpoint")
	if code, _ = get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with every condition back: %d, want 200", code)
	}

	// A loop that stopped making progress is not ready either.
	m.loop.Store(time.Now().Add(-10 * time.Minute).UnixNano())
	if code, body = get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no progress") {
		t.Errorf("/readyz with a stalled loop: %d %q, want 503", code, body)
	}
}

func TestStandingBy(t *testing.T) {
	m := New("dev")
	m.StandingBy(true)
	if _, _, by := m.State(); !by {
		t.Error("State does not say standing by")
	}
	if value(t, m, "pgoutbox_standing_by") != 1 {
		t.Error("pgoutbox_standing_by is not 1")
	}
	m.StandingBy(false)
	if _, _, by := m.State(); by || value(t, m, "pgoutbox_standing_by") != 0 {
		t.Error("still standing by")
	}
}

func TestHandlerUnknownPath(t *testing.T) {
	code, _ := get(t, New("dev").Handler(time.Minute), "/nope")
	if code != http.StatusNotFound {
		t.Errorf("/nope: %d, want 404", code)
	}
}

func TestListenAndServe(t *testing.T) {
	if _, err := Listen("256.0.0.1:bad"); err == nil || !strings.Contains(err.Error(), "metrics listen on 256.0.0.1:bad") {
		t.Errorf("Listen on a bad address: %v", err)
	}

	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New("dev")
	m.Ready("streaming")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, m.Handler(time.Minute)) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ready" {
		t.Errorf("GET /readyz over TCP: %d %q", resp.StatusCode, body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	done <- nil // for the cleanup
	if _, err := http.Get("http://" + ln.Addr().String() + "/readyz"); err == nil {
		t.Error("server still answers after Serve returned")
	}
}
