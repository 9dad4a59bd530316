// Package debeziumtest runs the reference pgoutbox must be a drop-in for: Kafka Connect
// standalone with Debezium's PostgreSQL connector (pgoutput) and the Outbox Event
// Router SMT, against a test's PostgreSQL and a real broker (internal/kafkareal).
//
// The jars come from internal/jvm (Kafka Connect 4.3.0, Debezium 3.6.1.Final), all on
// one class path; plugins are found through their ServiceLoader manifests.
package debeziumtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/jvm"
)

// Converter selects the worker's key, value and header converters, the part of a
// Connect setup that decides the bytes in Kafka.
type Converter string

const (
	// String is StringConverter for keys and values, SimpleHeaderConverter for
	// headers: text as is.
	String Converter = "string"
	// JSON is JsonConverter with schemas.enable=false for keys, values and headers:
	// each value as a JSON document (a string column becomes a quoted JSON string).
	JSON Converter = "json"
	// JSONSchema is JsonConverter with schemas.enable=true for keys and values
	// ({"schema":…,"payload":…}); headers keep the worker's default converter,
	// SimpleHeaderConverter, as in most deployments that only set key.converter
	// and value.converter.
	JSONSchema Converter = "json-schema"
)

// Converters are the setups the compatibility test runs, in order.
var Converters = []Converter{String, JSON, JSONSchema}

// WorkerConfig returns the converter properties of c.
func (c Converter) WorkerConfig() map[string]string {
	const (
		str    = "org.apache.kafka.connect.storage.StringConverter"
		simple = "org.apache.kafka.connect.storage.SimpleHeaderConverter"
		js     = "org.apache.kafka.connect.json.JsonConverter"
	)
	switch c {
	case JSON:
		return map[string]string{
			"key.converter": js, "key.converter.schemas.enable": "false",
			"value.converter": js, "value.converter.schemas.enable": "false",
			"header.converter": js, "header.converter.schemas.enable": "false",
		}
	case JSONSchema:
		return map[string]string{
			"key.converter": js, "key.converter.schemas.enable": "true",
			"value.converter": js, "value.converter.schemas.enable": "true",
			"header.converter": simple,
		}
	default:
		return map[string]string{"key.converter": str, "value.converter": str, "header.converter": simple}
	}
}

// Options configures a Connect worker with one Debezium connector.
type Options struct {
	// Brokers is the Kafka bootstrap address (PLAINTEXT).
	Brokers string
	// Dir holds the worker's files and log; empty makes a temporary directory that
	// Close removes.
	Dir string
	// Converter selects the converters (default String).
	Converter Converter
	// PGHost, PGPort, PGUser, PGPassword and PGDatabase reach PostgreSQL. The user
	// needs REPLICATION and the right to create the publication (a superuser will do).
	PGHost     string
	PGPort     int
	PGUser     string
	PGPassword string
	PGDatabase string
	// Slot and Publication are the connector's own, created by it.
	Slot, Publication string
	// Tables is table.include.list (default public.outbox).
	Tables []string
	// Connector are more connector properties (e.g. transforms.outbox.*); they win.
	Connector map[string]string
	// Worker are more worker properties; they win.
	Worker map[string]string
	// MaxHeap is the JVM's -Xmx (default 384m).
	MaxHeap string
	// JVMArgs, if set, replace the JVM options for a quick start and a small heap
	// (jvm.SmallHeap(MaxHeap)), e.g. for a benchmark.
	JVMArgs []string
	// Logf, if set, reports progress.
	Logf func(format string, args ...any)
}

// ConnectorName is the connector's name in the worker.
const ConnectorName = "outbox"

// Connect is a running Kafka Connect standalone worker.
type Connect struct {
	opts    Options
	dir     string
	tempDir bool
	rest    int
	proc    *jvm.Process
}

// ConnectorConfig returns the connector's properties for o: the PostgreSQL connector
// reading o.Tables through pgoutput without a snapshot, and the Event Router with its
// defaults (topic outbox.event.<aggregatetype>, key aggregateid, header id, value
// payload) unless o.Connector overrides them.
func ConnectorConfig(o Options) map[string]string {
	tables := o.Tables
	if len(tables) == 0 {
		tables = []string{"public.outbox"}
	}
	p := map[string]string{
		"name":                        ConnectorName,
		"connector.class":             "io.debezium.connector.postgresql.PostgresConnector",
		"tasks.max":                   "1",
		"database.hostname":           o.PGHost,
		"database.port":               strconv.Itoa(o.PGPort),
		"database.user":               o.PGUser,
		"database.password":           o.PGPassword,
		"database.dbname":             o.PGDatabase,
		"topic.prefix":                "dbz",
		"plugin.name":                 "pgoutput",
		"slot.name":                   o.Slot,
		"publication.name":            o.Publication,
		"publication.autocreate.mode": "filtered",
		"snapshot.mode":               "no_data",
		"table.include.list":          strings.Join(tables, ","),
		"poll.interval.ms":            "100",
		"transforms":                  "outbox",
		"transforms.outbox.type":      "io.debezium.transforms.outbox.EventRouter",
	}
	for k, v := range o.Connector {
		p[k] = v
	}
	return p
}

// WorkerProperties returns the worker's properties for o, without the file and port
// settings Start adds.
func WorkerProperties(o Options) map[string]string {
	conv := o.Converter
	if conv == "" {
		conv = String
	}
	p := map[string]string{
		"bootstrap.servers":        o.Brokers,
		"offset.flush.interval.ms": "500",
		// The plugins are on the class path and carry ServiceLoader manifests:
		// no class path scan.
		"plugin.discovery": "service_load",
	}
	for k, v := range conv.WorkerConfig() {
		p[k] = v
	}
	for k, v := range o.Worker {
		p[k] = v
	}
	return p
}

// Start starts the worker and waits until the connector and its task run.
func Start(ctx context.Context, o Options) (*Connect, error) {
	if err := jvm.Available(); err != nil {
		return nil, err
	}
	if o.Converter == "" {
		o.Converter = String
	}
	c := &Connect{opts: o, dir: o.Dir}
	if c.dir == "" {
		dir, err := os.MkdirTemp("", "debeziumtest-")
		if err != nil {
			return nil, fmt.Errorf("debeziumtest: %w", err)
		}
		c.dir, c.tempDir = dir, true
	}
	if err := c.start(ctx); err != nil {
		c.cleanup()
		return nil, err
	}
	return c, nil
}

func (c *Connect) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf("debeziumtest: "+format, args...)
	}
}

// LogFile is the worker's log.
func (c *Connect) LogFile() string { return filepath.Join(c.dir, "connect.log") }

// LogTail returns the last n lines of the worker's log.
func (c *Connect) LogTail(n int) string { return jvm.Tail(c.LogFile(), n) }

// Pid is the worker JVM's process id.
func (c *Connect) Pid() int { return c.proc.Pid() }

func (c *Connect) start(ctx context.Context) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("debeziumtest: free port: %w", err)
	}
	c.rest = l.Addr().(*net.TCPAddr).Port
	l.Close()
	worker := WorkerProperties(c.opts)
	worker["offset.storage.file.filename"] = filepath.Join(c.dir, "offsets.dat")
	worker["listeners"] = "http://127.0.0.1:" + strconv.Itoa(c.rest)
	workerFile := filepath.Join(c.dir, "worker.properties")
	connectorFile := filepath.Join(c.dir, "connector.properties")
	if err := writeProperties(workerFile, worker); err != nil {
		return err
	}
	if err := writeProperties(connectorFile, ConnectorConfig(c.opts)); err != nil {
		return err
	}
	cp, err := jvm.Classpath(jvm.Connect)
	if err != nil {
		return err
	}
	heap := c.opts.MaxHeap
	if heap == "" {
		heap = "384m"
	}
	jvmArgs := c.opts.JVMArgs
	if jvmArgs == nil {
		jvmArgs = jvm.SmallHeap(heap)
	}
	begin := time.Now()
	p, err := jvm.Start(cp, jvmArgs, "org.apache.kafka.connect.cli.ConnectStandalone",
		[]string{workerFile, connectorFile}, c.LogFile(), connectLogLevels)
	if err != nil {
		return err
	}
	c.proc = p
	if err := c.waitRunning(ctx); err != nil {
		p.Kill()
		return fmt.Errorf("%w; connect log:\n%s", err, c.LogTail(40))
	}
	c.logf("Connect with Debezium (%s) running in %s (pid %d, dir %s)", c.opts.Converter, time.Since(begin).Round(time.Millisecond), p.Pid(), c.dir)
	return nil
}

// connectLogLevels keep the worker's log to warnings and Debezium's own account of
// what it streams.
var connectLogLevels = map[string]string{
	"root":        "WARN",
	"io.debezium": "INFO",
	"io.debezium.connector.postgresql.PostgresConnectorTask": "WARN", // a dump of every role
}

// startTimeout bounds the worker's start on a busy machine.
const startTimeout = 2 * time.Minute

type status struct {
	Connector struct {
		State string `json:"state"`
	} `json:"connector"`
	Tasks []struct {
		State string `json:"state"`
		Trace string `json:"trace"`
	} `json:"tasks"`
}

// waitRunning polls the worker's REST API until the connector and its task report
// RUNNING; a FAILED task ends the wait with its trace.
func (c *Connect) waitRunning(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/connectors/%s/status", c.rest, ConnectorName)
	last := "no answer"
	for {
		select {
		case <-c.proc.Exited():
			return fmt.Errorf("debeziumtest: Connect exited during start: %v", c.proc.Err())
		default:
		}
		st, err := getStatus(ctx, url)
		switch {
		case err != nil:
			last = err.Error()
		case len(st.Tasks) > 0 && st.Tasks[0].State == "FAILED":
			return fmt.Errorf("debeziumtest: connector task failed: %s", firstLines(st.Tasks[0].Trace, 15))
		case st.Connector.State == "RUNNING" && len(st.Tasks) > 0 && st.Tasks[0].State == "RUNNING":
			return nil
		default:
			last = fmt.Sprintf("connector %s, %d tasks", st.Connector.State, len(st.Tasks))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("debeziumtest: connector not running within %s: %s", startTimeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// TaskState returns the connector task's state and, when it failed, its trace.
func (c *Connect) TaskState(ctx context.Context) (string, error) {
	st, err := getStatus(ctx, fmt.Sprintf("http://127.0.0.1:%d/connectors/%s/status", c.rest, ConnectorName))
	if err != nil {
		return "", err
	}
	if len(st.Tasks) == 0 {
		return "NONE", nil
	}
	if st.Tasks[0].State == "FAILED" {
		return "FAILED", errors.New(firstLines(st.Tasks[0].Trace, 15))
	}
	return st.Tasks[0].State, nil
}

func getStatus(ctx context.Context, url string) (status, error) {
	var st status
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("GET %s: %w", url, err)
	}
	return st, nil
}

// Stop stops the worker (SIGTERM to its process group, SIGKILL after 30s).
func (c *Connect) Stop() error {
	if c.proc == nil || !c.proc.Running() {
		return nil
	}
	err := c.proc.Stop(30 * time.Second)
	c.logf("Connect stopped")
	return err
}

// Close stops the worker and removes its directory if Start made it.
func (c *Connect) Close() error {
	err := c.Stop()
	c.cleanup()
	return err
}

func (c *Connect) cleanup() {
	if c.tempDir {
		os.RemoveAll(c.dir)
	}
}

// writeProperties writes p as a Java properties file, escaping what the format needs.
func writeProperties(path string, p map[string]string) error {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s strings.Builder
	s.WriteString("# Written by internal/debeziumtest.\n")
	esc := strings.NewReplacer(`\`, `\\`, "\n", `\n`, ":", `\:`, "=", `\=`)
	for _, k := range keys {
		fmt.Fprintf(&s, "%s=%s\n", esc.Replace(k), esc.Replace(p[k]))
	}
	if err := os.WriteFile(path, []byte(s.String()), 0o644); err != nil {
		return fmt.Errorf("debeziumtest: %w", err)
	}
	return nil
}

func firstLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}
