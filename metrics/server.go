package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics, /healthz and /readyz.
//
// /healthz answers 200 while the replication loop turns (it turns at least once per
// status interval even when idle, blocked on Kafka or reconnecting), so a hung
// process is restarted by its orchestrator. /readyz answers 200 only while streaming
// with a producer that reaches its brokers.
func (m *Metrics) Handler(stale time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		last := m.LastProgress()
		switch {
		case last.IsZero():
			// Not started yet: alive, just not ready.
			fmt.Fprintln(w, "ok: starting")
		case m.Alive(stale):
			fmt.Fprintln(w, "ok")
		default:
			http.Error(w, fmt.Sprintf("replication loop has made no progress for %s", time.Since(last).Round(time.Second)), http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, reasons, _ := m.State()
		if last := m.LastProgress(); ready && !last.IsZero() && time.Since(last) > stale {
			ready, reasons = false, []string{fmt.Sprintf("replication loop has made no progress for %s", time.Since(last).Round(time.Second))}
		}
		if !ready {
			http.Error(w, "not ready: "+strings.Join(reasons, "; "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Listen binds addr now, so a bad or busy address is a startup error rather than a
// log line later.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves h on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("metrics server: %w", err)
		}
		return nil
	}
}
