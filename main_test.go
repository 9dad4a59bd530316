package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/relay"
)

// env is a fake environment for getenv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// setEnv replaces the package's getenv for one test, so the real environment of the
// machine running the tests cannot leak in.
func setEnv(t *testing.T, e env) {
	t.Helper()
	old := getenv
	getenv = e.get
	t.Cleanup(func() { getenv = old })
}

// runMain runs the command as main does and returns its exit code and output. The
// context is already cancelled: these tests must fail before anything connects, and
// if one does not, it ends instead of dialling.
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, &out, &errOut)
	code = exitCode(err, &errOut)
	return code, out.String(), errOut.String()
}

// required are the flags without which the relay does not start.
var required = []string{"--postgres-url", "postgres://app@127.0.0.1:1/orders", "--kafka-brokers", "127.0.0.1:1"}

// build parses args and e the way runRelay does and returns the options.
func build(t *testing.T, e env, args ...string) (*options, error) {
	t.Helper()
	f := newRelayFlags()
	if err := f.parse(args, e.get); err != nil {
		return nil, err
	}
	return f.build()
}

func mustBuild(t *testing.T, e env, args ...string) *options {
	t.Helper()
	o, err := build(t, e, args...)
	if err != nil {
		t.Fatalf("build(%q): %v", args, err)
	}
	return o
}

func TestHelp(t *testing.T) {
	setEnv(t, env{})
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"run", "--help"}} {
		code, stdout, stderr := runMain(t, args...)
		if code != 0 {
			t.Errorf("%q: exit %d, want 0", args, code)
		}
		if stderr != "" {
			t.Errorf("%q: stderr %q, want nothing", args, stderr)
		}
		if !strings.HasPrefix(stdout, "pgoutbox publishes a PostgreSQL transactional outbox") {
			t.Errorf("%q: usage does not start with the introduction", args)
		}
		// The four groups, in this order.
		last := -1
		for _, g := range []string{"\nPostgreSQL:\n", "\nKafka:\n", "\nMapping (defaults match Debezium's outbox EventRouter):\n", "\nOperations:\n"} {
			i := strings.Index(stdout, g)
			if i < 0 {
				t.Errorf("%q: usage lacks group %q", args, strings.TrimSpace(g))
				continue
			}
			if i < last {
				t.Errorf("%q: group %q is out of order", args, strings.TrimSpace(g))
			}
			last = i
		}
	}
}

func TestHelpListsDefaultsAndEnv(t *testing.T) {
	setEnv(t, env{})
	_, stdout, _ := runMain(t, "--help")
	for _, want := range []string{
		"  --postgres-url URL\n",
		"env: PGOUTBOX_POSTGRES_URL\n",
		"  --kafka-brokers servers\n",
		"env: PGOUTBOX_KAFKA_BROKERS\n",
		"env: PGOUTBOX_KAFKA_CONFIG\n",
		"env: PGOUTBOX_HEADER_COLUMN\n",
		"  --slot name\n",
		"default: pgoutbox\n",
		"default: public.outbox\n",
		"default: aggregateid\n",
		"default: payload\n",
		"default: 20000\n",
		"default: 1s\n",
		"default: fail\n",
		"default: json\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	// Every flag names its environment variable.
	flags, envs := 0, 0
	for _, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(line, "  --") {
			flags++
		}
		if strings.HasPrefix(strings.TrimSpace(line), "env: PGOUTBOX_") {
			envs++
		}
	}
	if flags < 25 || flags != envs {
		t.Errorf("usage lists %d flags and %d env variables", flags, envs)
	}
	// Booleans and repeatable flags have no default line.
	for _, flag := range []string{"--accept-gap", "--kafka-config", "--header-column"} {
		i := strings.Index(stdout, "  "+flag)
		next := strings.Index(stdout[i+1:], "\n  --")
		if next < 0 {
			next = len(stdout) - i - 1
		}
		if strings.Contains(stdout[i:i+1+next], "default:") {
			t.Errorf("usage gives %s a default: %q", flag, stdout[i:i+1+next])
		}
	}
}

func TestStatusHelp(t *testing.T) {
	setEnv(t, env{})
	code, stdout, _ := runMain(t, "status", "--help")
	if code != 0 {
		t.Errorf("status --help: exit %d", code)
	}
	for _, want := range []string{"pgoutbox status reads the replication slot", "  --json\n", "  --max-retained-mb int\n", "\nPostgreSQL:\n",
		"  --slot name\n", "  --table table\n", "  --checkpoint-store string\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status usage lacks %q", want)
		}
	}
	// Only what status reads: nothing of Kafka, the mapping or the stream.
	for _, not := range []string{"--kafka-brokers", "--exactly-once", "--topic", "--max-in-flight", "--backfill", "--on-error"} {
		if strings.Contains(stdout, not) {
			t.Errorf("status usage lists %s, which status does not read", not)
		}
	}
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runMain(t, "version")
	if code != 0 || stdout != "pgoutbox "+version+"\n" || stderr != "" {
		t.Errorf("version: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	propsFile := filepath.Join(t.TempDir(), "kafka.properties")
	if err := os.WriteFile(propsFile, []byte("enable.idempotence=false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	with := func(extra ...string) []string { return append(append([]string{}, required...), extra...) }
	for _, c := range []struct {
		name string
		env  env
		args []string
		want string
	}{
		{"unknown flag", nil, with("--nope"), "flag provided but not defined: -nope"},
		{"stray argument", nil, with("extra"), `unexpected argument "extra"`},
		{"unknown subcommand is an argument", nil, []string{"start"}, `unexpected argument "start"`},
		{"missing postgres url", nil, []string{"--kafka-brokers", "k:9092"}, "--postgres-url is required"},
		{"missing brokers", nil, []string{"--postgres-url", "postgres://h/db"}, "--kafka-brokers is required"},
		{"bad on-error", nil, with("--on-error", "skip"), `--on-error "skip": want fail or dead-letter`},
		{"bad dead-letter topic", nil, with("--on-error", "dead-letter", "--dead-letter-topic", "dead letters"), "--dead-letter-topic"},
		{"bad log format", nil, with("--log-format", "xml"), `--log-format "xml": want json or console`},
		{"bad log level", nil, with("--log-level", "verbose"), `--log-level "verbose"`},
		{"upper-case slot", nil, with("--slot", "MySlot"), `--slot "MySlot": a slot name may contain only lower case letters`},
		{"slot with a dash", nil, with("--slot", "my-slot"), `--slot "my-slot"`},
		{"slot too long", nil, with("--slot", strings.Repeat("s", 64)), "a slot name has 1 to 63 characters"},
		{"empty slot", nil, with("--slot", ""), "a slot name has 1 to 63 characters"},
		{"kafka config without =", nil, with("--kafka-config", "linger.ms"), `kafka property "linger.ms"…: want key=value`},
		{"idempotence off", nil, with("--kafka-config", "enable.idempotence=false"), "enable.idempotence=false would allow lost or reordered events"},
		{"acks=1", nil, with("--kafka-config", "acks=1"), "acks=1"},
		{"bootstrap.servers property", nil, with("--kafka-config", "bootstrap.servers=x:1"), "use --kafka-brokers"},
		{"forbidden property in file", nil, with("--kafka-config-file", propsFile), "enable.idempotence=false"},
		{"missing kafka config file", nil, with("--kafka-config-file", filepath.Join(t.TempDir(), "nope")), "read kafka config file"},
		{"bad table", nil, with("--table", "a.b.c"), "want schema.table"},
		{"bad topic template", nil, with("--topic", "outbox.{type"), "unmatched '{'"},
		{"bad checkpoint store", nil, with("--checkpoint-store", "redis"), `--checkpoint-store "redis"`},
		{"zero max in flight", nil, with("--max-in-flight", "0"), "--max-in-flight must be at least 1"},
		{"zero status interval", nil, with("--status-interval", "0s"), "--status-interval must be positive"},
		{"bad duration", nil, with("--status-interval", "soon"), "invalid value"},
		{"duplicate header", nil, with("--header-column", "a=h", "--header-column", "b=h"), `header "h" is set twice`},
		{"bad env bool", env{"PGOUTBOX_ACCEPT_GAP": "maybe"}, required, `invalid value "maybe" for PGOUTBOX_ACCEPT_GAP`},
		{"bad env int", env{"PGOUTBOX_MAX_IN_FLIGHT": "lots"}, required, "PGOUTBOX_MAX_IN_FLIGHT"},
		{"forbidden property from env", env{"PGOUTBOX_KAFKA_CONFIG": "linger.ms=5,acks=0"}, required, "acks=0"},
		{"missing brokers, env empty", env{"PGOUTBOX_POSTGRES_URL": "postgres://h/db"}, nil, "--kafka-brokers is required"},
		{"status without postgres url", nil, []string{"status"}, "--postgres-url is required"},
		{"status unknown flag", nil, []string{"status", "--nope"}, "flag provided but not defined"},
	} {
		t.Run(c.name, func(t *testing.T) {
			setEnv(t, c.env)
			code, stdout, stderr := runMain(t, c.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "pgoutbox: ") || lines[1] != "Run 'pgoutbox --help' for usage." {
				t.Fatalf("stderr %q, want one error line and the --help hint", stderr)
			}
			if !strings.Contains(lines[0], c.want) {
				t.Errorf("error %q, want it to contain %q", lines[0], c.want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"success", nil, 0, ""},
		{"help", errHelp, 0, ""},
		{"wrapped help", fmt.Errorf("parse: %w", errHelp), 0, ""},
		{"usage", &usageError{errors.New("--slot is bad")}, 2, "pgoutbox: --slot is bad\nRun 'pgoutbox --help' for usage.\n"},
		{"wrapped usage", fmt.Errorf("config: %w", &usageError{errors.New("bad")}), 2, "pgoutbox: config: bad\nRun 'pgoutbox --help' for usage.\n"},
		{"status needs attention", &statusError{code: 1}, 1, ""},
		{"runtime", errors.New("cannot reach PostgreSQL"), 1, "pgoutbox: cannot reach PostgreSQL\n"},
	} {
		var stderr bytes.Buffer
		if got := exitCode(c.err, &stderr); got != c.code {
			t.Errorf("%s: exitCode = %d, want %d", c.name, got, c.code)
		}
		if stderr.String() != c.stderr {
			t.Errorf("%s: stderr %q, want %q", c.name, stderr.String(), c.stderr)
		}
	}
}

func TestBuildDefaults(t *testing.T) {
	o := mustBuild(t, nil, required...)
	c := o.cfg
	if c.PostgresURL != "postgres://app@127.0.0.1:1/orders" || c.Kafka.Brokers != "127.0.0.1:1" {
		t.Errorf("PostgresURL %q Brokers %q", c.PostgresURL, c.Kafka.Brokers)
	}
	if !reflect.DeepEqual(c.Mapping, outbox.DefaultConfig()) {
		t.Errorf("Mapping = %+v, want Debezium's defaults %+v", c.Mapping, outbox.DefaultConfig())
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"Slot", c.Slot, "pgoutbox"},
		{"Publication", c.Publication, "pgoutbox"},
		{"CheckpointStore", c.CheckpointStore, relay.StoreFile},
		{"CheckpointFile", c.CheckpointFile, "pgoutbox.checkpoint"},
		{"CheckpointTable", c.CheckpointTable, "public.pgoutbox_checkpoint"},
		{"MaxInFlight", c.MaxInFlight, 20000},
		{"StatusInterval", c.StatusInterval, time.Second},
		{"ShutdownTimeout", c.ShutdownTimeout, 30 * time.Second},
		{"RetryActive", c.RetryActive, 5 * time.Second},
		{"OnError", c.OnError, relay.OnErrorFail},
		{"DeadLetterTopic", c.DeadLetterTopic, "outbox.dead-letter"},
		{"AcceptGap", c.AcceptGap, false},
		{"SlotFailover", c.SlotFailover, false},
		{"ClientID", c.Kafka.ClientID, "pgoutbox"},
		{"Properties", len(c.Kafka.Properties), 0},
		{"logLevel", o.logLevel, "info"},
		{"logFormat", o.logFormat, "json"},
		{"metrics", o.metrics, ""},
	} {
		if f.got != f.want {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
}

func TestEnvFillsFlags(t *testing.T) {
	e := env{
		"PGOUTBOX_POSTGRES_URL":         "postgres://env@db/orders",
		"PGOUTBOX_KAFKA_BROKERS":        "k1:9092,k2:9092",
		"PGOUTBOX_SLOT":                 "orders_slot",
		"PGOUTBOX_PUBLICATION":          "orders_pub",
		"PGOUTBOX_TABLE":                "events",
		"PGOUTBOX_TOPIC":                "{aggregatetype}.events",
		"PGOUTBOX_KEY_COLUMN":           "entity_id",
		"PGOUTBOX_MAX_IN_FLIGHT":        "500",
		"PGOUTBOX_STATUS_INTERVAL":      "2s",
		"PGOUTBOX_ACCEPT_GAP":           "true",
		"PGOUTBOX_ON_ERROR":             "dead-letter",
		"PGOUTBOX_DEAD_LETTER_TOPIC":    "orders.dlq",
		"PGOUTBOX_LOG_FORMAT":           "console",
		"PGOUTBOX_LOG_LEVEL":            "debug",
		"PGOUTBOX_METRICS_ADDR":         "127.0.0.1:9187",
		"PGOUTBOX_CHECKPOINT_STORE":     "postgres",
		"PGOUTBOX_SHUTDOWN_TIMEOUT":     "1m",
		"PGOUTBOX_KAFKA_CONFIG":         "linger.ms=5",
		"PGOUTBOX_AGGREGATETYPE_COLUMN": "kind",
	}
	o := mustBuild(t, e)
	c := o.cfg
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"PostgresURL", c.PostgresURL, "postgres://env@db/orders"},
		{"Brokers", c.Kafka.Brokers, "k1:9092,k2:9092"},
		{"Slot", c.Slot, "orders_slot"},
		{"Publication", c.Publication, "orders_pub"},
		{"Table", c.Mapping.FirstTable(), "public.events"},
		{"TopicTemplate", c.Mapping.TopicTemplate, "{aggregatetype}.events"},
		{"KeyColumn", c.Mapping.KeyColumn, "entity_id"},
		{"AggregateTypeColumn", c.Mapping.AggregateTypeColumn, "kind"},
		{"MaxInFlight", c.MaxInFlight, 500},
		{"StatusInterval", c.StatusInterval, 2 * time.Second},
		{"ShutdownTimeout", c.ShutdownTimeout, time.Minute},
		{"AcceptGap", c.AcceptGap, true},
		{"OnError", c.OnError, "dead-letter"},
		{"DeadLetterTopic", c.DeadLetterTopic, "orders.dlq"},
		{"CheckpointStore", c.CheckpointStore, "postgres"},
		{"linger.ms", c.Kafka.Properties["linger.ms"], "5"},
		{"logFormat", o.logFormat, "console"},
		{"logLevel", o.logLevel, "debug"},
		{"metrics", o.metrics, "127.0.0.1:9187"},
	} {
		if f.got != f.want {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
}

func TestFlagWinsOverEnv(t *testing.T) {
	e := env{
		"PGOUTBOX_POSTGRES_URL":  "postgres://env@db/orders",
		"PGOUTBOX_KAFKA_BROKERS": "env:9092",
		"PGOUTBOX_SLOT":          "env_slot",
		"PGOUTBOX_ACCEPT_GAP":    "true",
		"PGOUTBOX_KAFKA_CONFIG":  "compression.type=zstd,linger.ms=7",
		"PGOUTBOX_HEADER_COLUMN": "type=eventType",
	}
	o := mustBuild(t, e, "--kafka-brokers", "flag:9092", "--slot", "flag_slot", "--accept-gap=false",
		"--kafka-config", "linger.ms=9", "--header-column", "tenant")
	c := o.cfg
	if c.PostgresURL != "postgres://env@db/orders" {
		t.Errorf("PostgresURL %q: an unset flag must come from the environment", c.PostgresURL)
	}
	if c.Kafka.Brokers != "flag:9092" || c.Slot != "flag_slot" || c.AcceptGap {
		t.Errorf("Brokers %q Slot %q AcceptGap %v: the command line must win", c.Kafka.Brokers, c.Slot, c.AcceptGap)
	}
	// A repeatable flag given on the command line replaces the environment's list.
	if want := map[string]string{"linger.ms": "9"}; !reflect.DeepEqual(c.Kafka.Properties, want) {
		t.Errorf("Properties = %v, want %v", c.Kafka.Properties, want)
	}
	if want := []outbox.HeaderColumn{{Column: "tenant", Name: "tenant"}}; !reflect.DeepEqual(c.Mapping.Headers, want) {
		t.Errorf("Headers = %+v, want %+v", c.Mapping.Headers, want)
	}
}

func TestEnvListSeparators(t *testing.T) {
	for _, c := range []struct {
		name, value string
		want        map[string]string
	}{
		{"one", "linger.ms=5", map[string]string{"linger.ms": "5"}},
		{"commas", "linger.ms=5,compression.type=lz4,security.protocol=SSL",
			map[string]string{"linger.ms": "5", "compression.type": "lz4", "security.protocol": "SSL"}},
		{"commas with spaces", " linger.ms = 5 , compression.type=lz4 ",
			map[string]string{"linger.ms": "5", "compression.type": "lz4"}},
		{"newlines keep commas in values", "ssl.cipher.suites=ECDHE-RSA-AES256-GCM-SHA384,ECDHE-RSA-AES128-GCM-SHA256\nlinger.ms=5\n",
			map[string]string{"ssl.cipher.suites": "ECDHE-RSA-AES256-GCM-SHA384,ECDHE-RSA-AES128-GCM-SHA256", "linger.ms": "5"}},
		{"CRLF", "linger.ms=5\r\ncompression.type=lz4\r\n", map[string]string{"linger.ms": "5", "compression.type": "lz4"}},
		{"later wins", "linger.ms=5\nlinger.ms=6", map[string]string{"linger.ms": "6"}},
	} {
		o, err := build(t, env{"PGOUTBOX_KAFKA_CONFIG": c.value}, required...)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(o.cfg.Kafka.Properties, c.want) {
			t.Errorf("%s: PGOUTBOX_KAFKA_CONFIG=%q gave %v, want %v", c.name, c.value, o.cfg.Kafka.Properties, c.want)
		}
	}
}

func TestHeaderColumns(t *testing.T) {
	want := []outbox.HeaderColumn{{Column: "type", Name: "eventType"}, {Column: "tenant", Name: "tenant"}, {Column: "trace", Name: "traceparent"}}
	for _, c := range []struct {
		name string
		env  env
		args []string
	}{
		{"env with commas", env{"PGOUTBOX_HEADER_COLUMN": "type=eventType,tenant, trace = traceparent"}, required},
		{"env with newlines", env{"PGOUTBOX_HEADER_COLUMN": "type=eventType\ntenant\ntrace=traceparent\n"}, required},
		{"flags", nil, append(append([]string{}, required...),
			"--header-column", "type=eventType", "--header-column", "tenant", "--header-column", "trace=traceparent")},
	} {
		o, err := build(t, c.env, c.args...)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(o.cfg.Mapping.Headers, want) {
			t.Errorf("%s: Headers = %+v, want %+v", c.name, o.cfg.Mapping.Headers, want)
		}
	}
}

func TestKafkaConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kafka.properties")
	content := "# cluster\nsecurity.protocol=SASL_SSL\nsasl.username=app\n\nlinger.ms=50\ncompression.type=zstd\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"security.protocol": "SASL_SSL", "sasl.username": "app", "linger.ms": "5", "compression.type": "zstd"}

	o := mustBuild(t, nil, append(append([]string{}, required...), "--kafka-config-file", path, "--kafka-config", "linger.ms=5")...)
	if !reflect.DeepEqual(o.cfg.Kafka.Properties, want) {
		t.Errorf("file + flag: Properties = %v, want %v", o.cfg.Kafka.Properties, want)
	}

	// The same through the environment: the file from PGOUTBOX_KAFKA_CONFIG_FILE,
	// overridden by PGOUTBOX_KAFKA_CONFIG.
	o = mustBuild(t, env{"PGOUTBOX_KAFKA_CONFIG_FILE": path, "PGOUTBOX_KAFKA_CONFIG": "linger.ms=5"}, required...)
	if !reflect.DeepEqual(o.cfg.Kafka.Properties, want) {
		t.Errorf("env: Properties = %v, want %v", o.cfg.Kafka.Properties, want)
	}
}

func TestKafkaConfigFileBadLine(t *testing.T) {
	setEnv(t, env{})
	path := filepath.Join(t.TempDir(), "kafka.properties")
	if err := os.WriteFile(path, []byte("linger.ms=5\nnot a property\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runMain(t, append(append([]string{}, required...), "--kafka-config-file", path)...)
	if code != 2 || !strings.Contains(stderr, "line 2") {
		t.Errorf("exit %d stderr %q, want 2 naming line 2", code, stderr)
	}
}

func TestTableIsQualified(t *testing.T) {
	for in, want := range map[string]string{"outbox": "public.outbox", "app.events": "app.events"} {
		o := mustBuild(t, nil, append(append([]string{}, required...), "--table", in)...)
		if o.cfg.Mapping.FirstTable() != want {
			t.Errorf("--table %s: Table = %q, want %q", in, o.cfg.Mapping.FirstTable(), want)
		}
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"postgres-url":      "PGOUTBOX_POSTGRES_URL",
		"kafka-config-file": "PGOUTBOX_KAFKA_CONFIG_FILE",
		"slot":              "PGOUTBOX_SLOT",
	} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}
