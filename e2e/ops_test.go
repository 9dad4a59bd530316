package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// metricValue sums a metric's series on /metrics (every label set), or -1 if absent.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	body := httpGet(t, "http://"+addr+"/metrics")
	sum, found := 0.0, false
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", l, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return -1
	}
	return sum
}

func httpStatus(t *testing.T, u string) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestMetricsMove: the metrics an operator watches exist and move with the stream:
// events and bytes published by topic, confirmed and checkpoint LSNs, the
// commit-to-ack histogram; /healthz and /readyz answer, and /readyz turns 503 while
// the brokers are down.
func TestMetricsMove(t *testing.T) {
	dataDir := t.TempDir()
	e := newEnv(t, envOptions{kafka: kafkatest.Options{DataDir: dataDir}})
	ports := kafkatest.Ports(e.kafka)
	p := e.start("--metrics-addr", "127.0.0.1:0")
	p.waitLog(`"streaming"`, 30*time.Second)
	addr := metricsAddr(t, p)
	for _, name := range []string{"pgoutbox_events_published_total", "pgoutbox_events_in_flight", "pgoutbox_received_lsn",
		"pgoutbox_confirmed_lsn", "pgoutbox_checkpoint_lsn", "pgoutbox_replication_lag_bytes", "pgoutbox_replication_lag_seconds",
		"pgoutbox_commit_to_ack_seconds_count", "pgoutbox_producer_errors_total", "pgoutbox_reconnects_total"} {
		if name == "pgoutbox_events_published_total" {
			continue // appears with the first event's topic
		}
		if metricValue(t, addr, name) < 0 {
			t.Errorf("/metrics has no %s", name)
		}
	}
	confirmed0 := metricValue(t, addr, "pgoutbox_confirmed_lsn")
	for i := 0; i < 20; i++ {
		e.insertTx(event{ID: uuidFor(i), Type: "order", AggID: "a", Kind: "T", Payload: `{"x": 1}`})
	}
	e.consumeN(20, 30*time.Second)
	waitFor(t, 10*time.Second, "metrics to count the events", func() bool {
		return metricValue(t, addr, "pgoutbox_events_published_total") == 20 &&
			metricValue(t, addr, "pgoutbox_confirmed_lsn") > confirmed0
	})
	if v := metricValue(t, addr, "pgoutbox_commit_to_ack_seconds_count"); v != 20 {
		t.Errorf("commit-to-ack histogram counted %v events, want 20", v)
	}
	if v := metricValue(t, addr, "pgoutbox_bytes_published_total"); v <= 0 {
		t.Errorf("bytes published %v", v)
	}
	if v, c := metricValue(t, addr, "pgoutbox_checkpoint_lsn"), metricValue(t, addr, "pgoutbox_confirmed_lsn"); v < c {
		t.Errorf("checkpoint LSN %v behind confirmed %v: a confirm ran before its checkpoint", v, c)
	}
	if s := httpStatus(t, "http://"+addr+"/healthz"); s != 200 {
		t.Errorf("/healthz %d", s)
	}
	if s := httpStatus(t, "http://"+addr+"/readyz"); s != 200 {
		t.Errorf("/readyz %d while streaming", s)
	}

	// Brokers down: not ready, still alive.
	e.kafka.Close()
	e.insertTx(event{ID: uuidFor(100), Type: "order", AggID: "a", Kind: "T", Payload: `{}`})
	waitFor(t, 30*time.Second, "/readyz to fail while Kafka is down", func() bool {
		return httpStatus(t, "http://"+addr+"/readyz") == http.StatusServiceUnavailable
	})
	if s := httpStatus(t, "http://"+addr+"/healthz"); s != 200 {
		t.Errorf("/healthz %d while Kafka is down: the process is alive", s)
	}
	if v := metricValue(t, addr, "pgoutbox_kafka_brokers_up"); v != 0 {
		t.Errorf("pgoutbox_kafka_brokers_up %v while down", v)
	}
	k, err := kafkatest.Start(kafkatest.Options{Ports: ports, DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	waitFor(t, 60*time.Second, "/readyz to recover", func() bool {
		return httpStatus(t, "http://"+addr+"/readyz") == 200
	})
}

// TestStatusJSON: `pgoutbox status --json` reports the slot, publication and
// checkpoint, and exits 1 for an inactive slot that retains more WAL than allowed.
func TestStatusJSON(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "T", Payload: `{}`})
	e.consumeN(1, 30*time.Second)
	e.stopClean(p)

	run := func(extra ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{"status", "--json", "--postgres-url", e.url(), "--slot", e.slot, "--checkpoint-file", e.checkpointPath()}, extra...)
		out, err := exec.CommandContext(ctx, binary, args...).Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	code, out := run()
	var rep struct {
		Slot struct {
			Name         string `json:"name"`
			Active       bool   `json:"active"`
			ConfirmedLSN string `json:"confirmed_flush_lsn"`
			Retained     int64  `json:"retained_wal_bytes"`
			WALStatus    string `json:"wal_status"`
		} `json:"slot"`
		Publication struct {
			Name     string `json:"name"`
			HasTable bool   `json:"includes_table"`
		} `json:"publication"`
		Checkpoint struct {
			LSN string `json:"lsn"`
		} `json:"checkpoint"`
		Problems []string `json:"problems"`
		OK       bool     `json:"ok"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json output is not JSON: %v\n%s", err, out)
	}
	if code != 0 || !rep.OK || rep.Slot.Name != e.slot || rep.Slot.Active || rep.Publication.Name != "pgoutbox" ||
		!rep.Publication.HasTable || rep.Checkpoint.LSN == "" || rep.Checkpoint.LSN != rep.Slot.ConfirmedLSN || rep.Slot.WALStatus == "" {
		t.Errorf("healthy status: exit %d, report %+v", code, rep)
	}

	// WAL written while nothing streams is retained by the inactive slot.
	e.exec(`CREATE TABLE filler AS SELECT md5(i::text) || repeat('x', 1000) AS f FROM generate_series(1, 20000) i`)
	e.pendingChanges() // flushes the WAL: status measures retention from the flushed position
	code, out = run("--max-retained-mb", "1")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if code != 1 || rep.OK || len(rep.Problems) == 0 || !strings.Contains(rep.Problems[0], "retains") {
		t.Errorf("inactive slot retaining %d bytes with --max-retained-mb 1: exit %d, problems %v", rep.Slot.Retained, code, rep.Problems)
	}
}
