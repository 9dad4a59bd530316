// Package metrics holds pgoutbox's Prometheus metrics and its health endpoints.
//
// Every metric name starts with pgoutbox_. The relay updates them whether or not they
// are served, so they cost the same in tests and in production.
package metrics

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the set of pgoutbox metrics, registered in its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	published        *prometheus.CounterVec
	publishedBytes   *prometheus.CounterVec
	InFlight         prometheus.Gauge
	ReceivedLSN      prometheus.Gauge
	ConfirmedLSN     prometheus.Gauge
	CheckpointLSN    prometheus.Gauge
	ServerLSN        prometheus.Gauge
	LagBytes         prometheus.Gauge
	lagSeconds       prometheus.GaugeFunc
	CommitToAck      prometheus.Histogram
	ProducerErrors   *prometheus.CounterVec
	Reconnects       prometheus.Counter
	DeadLettered     prometheus.Counter
	FailedEvents     prometheus.Counter
	SkippedChanges   *prometheus.CounterVec
	Streaming        prometheus.Gauge
	standingBy       prometheus.Gauge
	BrokersUp        prometheus.Gauge
	CheckpointErrors prometheus.Counter
	Transactions     prometheus.Counter
	BackfillRows     prometheus.Counter
	BackfillRunning  prometheus.Gauge

	// lastConfirmedCommit is the commit time (unix nanos) of the newest confirmed
	// transaction; 0 while caught up.
	lastConfirmedCommit atomic.Int64

	mu     sync.Mutex
	topics map[string]topicCounters

	loop atomic.Int64 // unix nanos of the replication loop's last progress

	stateMu sync.Mutex
	// failing maps each readiness condition that does not hold to why not.
	failing  map[string]string
	standing bool
}

type topicCounters struct {
	events prometheus.Counter
	bytes  prometheus.Counter
}

// New creates and registers every metric.
func New(version string) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), topics: map[string]topicCounters{}}
	f := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m.published = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_events_published_total", Help: "Events acknowledged by Kafka, by topic."}, []string{"topic"})
	m.publishedBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_bytes_published_total", Help: "Key and value bytes acknowledged by Kafka, by topic."}, []string{"topic"})
	m.InFlight = f("pgoutbox_events_in_flight", "Events produced to Kafka and not yet acknowledged.")
	m.ReceivedLSN = f("pgoutbox_received_lsn", "WAL position of the last change received from PostgreSQL.")
	m.ConfirmedLSN = f("pgoutbox_confirmed_lsn", "WAL position last confirmed to PostgreSQL (the slot's confirmed_flush_lsn).")
	m.CheckpointLSN = f("pgoutbox_checkpoint_lsn", "WAL position last saved to the checkpoint.")
	m.ServerLSN = f("pgoutbox_server_lsn", "Server WAL end as last reported by the walsender.")
	m.LagBytes = f("pgoutbox_replication_lag_bytes", "Server WAL end minus the confirmed position: WAL the slot retains because of pgoutbox.")
	m.lagSeconds = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgoutbox_replication_lag_seconds", Help: "Now minus the commit time of the newest confirmed transaction; 0 while caught up."}, func() float64 {
		ns := m.lastConfirmedCommit.Load()
		if ns == 0 {
			return 0
		}
		return time.Since(time.Unix(0, ns)).Seconds()
	})
	m.CommitToAck = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pgoutbox_commit_to_ack_seconds",
		Help:    "Time from a transaction's commit in PostgreSQL to Kafka's ack of each of its events.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	m.ProducerErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_producer_errors_total", Help: "Kafka producer errors, by kind (message, fatal, transient)."}, []string{"kind"})
	m.Reconnects = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_reconnects_total", Help: "Times the pipeline was restarted after an error."})
	m.DeadLettered = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_dead_lettered_total", Help: "Events sent to the dead-letter topic."})
	m.FailedEvents = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_failed_events_total", Help: "Events that could not be published and stopped pgoutbox (--on-error=fail)."})
	m.SkippedChanges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgoutbox_skipped_changes_total", Help: "Replicated changes that are not outbox inserts (updates, deletes, other tables, foreign messages), by kind."}, []string{"kind"})
	m.Streaming = f("pgoutbox_streaming", "1 while the replication stream is open.")
	m.standingBy = f("pgoutbox_standing_by", "1 while another process streams from the slot and this instance waits to take over.")
	m.CheckpointErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_checkpoint_errors_total", Help: "Checkpoint saves that failed (a full or read-only disk, an unreachable store); nothing new is confirmed until one succeeds."})
	m.BrokersUp = f("pgoutbox_kafka_brokers_up", "0 while librdkafka reports all brokers down.")
	m.Transactions = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_transactions_total", Help: "PostgreSQL transactions received."})
	m.BackfillRows = prometheus.NewCounter(prometheus.CounterOpts{Name: "pgoutbox_backfill_rows_total", Help: "Rows published by --backfill."})
	m.BackfillRunning = f("pgoutbox_backfill_running", "1 while --backfill publishes existing rows.")
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgoutbox_build_info", Help: "Always 1; the version label names the build.", ConstLabels: prometheus.Labels{"version": version}})
	info.Set(1)
	m.BrokersUp.Set(1)
	m.Registry.MustRegister(m.published, m.publishedBytes, m.InFlight, m.ReceivedLSN, m.ConfirmedLSN,
		m.CheckpointLSN, m.ServerLSN, m.LagBytes, m.lagSeconds, m.CommitToAck, m.ProducerErrors, m.Reconnects,
		m.DeadLettered, m.FailedEvents, m.SkippedChanges, m.Streaming, m.standingBy, m.BrokersUp, m.CheckpointErrors, m.Transactions,
		m.BackfillRows, m.BackfillRunning, info, m.readyGauge(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, k := range []string{"message", "fatal", "transient"} {
		m.ProducerErrors.WithLabelValues(k)
	}
	m.failing = map[string]string{"streaming": "starting"}
	return m
}

// Published counts one acknowledged event. Called on the delivery-report goroutine
// for every event, so the per-topic counters are cached.
func (m *Metrics) Published(topic string, bytes int) {
	m.mu.Lock()
	c, ok := m.topics[topic]
	if !ok {
		c = topicCounters{m.published.WithLabelValues(topic), m.publishedBytes.WithLabelValues(topic)}
		m.topics[topic] = c
	}
	m.mu.Unlock()
	c.events.Inc()
	c.bytes.Add(float64(bytes))
}

// Confirmed records a confirm: the position, and the commit time of the newest
// confirmed transaction (zero when pgoutbox is caught up).
func (m *Metrics) Confirmed(lsn pglogrepl.LSN, commit time.Time) {
	m.ConfirmedLSN.Set(float64(lsn))
	if commit.IsZero() {
		m.lastConfirmedCommit.Store(0)
	} else {
		m.lastConfirmedCommit.Store(commit.UnixNano())
	}
}

// Progress records that the replication loop is making progress: it received from
// the server, waited on Kafka's backpressure or a Kafka commit, or stood by or backed
// off on purpose. A loop that merely spins does none of these.
func (m *Metrics) Progress() { m.loop.Store(time.Now().UnixNano()) }

// Ready records that readiness condition cond (streaming, kafka, checkpoint, …)
// holds again.
func (m *Metrics) Ready(cond string) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	delete(m.failing, cond)
}

// NotReady records that readiness condition cond does not hold, and why.
func (m *Metrics) NotReady(cond, reason string) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.failing[cond] = reason
}

// StandingBy records whether this instance waits for a slot another process holds.
func (m *Metrics) StandingBy(on bool) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.standing = on
	if on {
		m.standingBy.Set(1)
	} else {
		m.standingBy.Set(0)
	}
}

// State returns whether every readiness condition holds, the reasons of those that
// do not (sorted by condition), and whether the instance stands by.
func (m *Metrics) State() (ready bool, reasons []string, standingBy bool) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	conds := make([]string, 0, len(m.failing))
	for c := range m.failing {
		conds = append(conds, c)
	}
	sort.Strings(conds)
	for _, c := range conds {
		reasons = append(reasons, m.failing[c])
	}
	return len(conds) == 0, reasons, m.standing
}

// LastProgress returns when the loop last made progress (zero before it started).
func (m *Metrics) LastProgress() time.Time {
	ns := m.loop.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
