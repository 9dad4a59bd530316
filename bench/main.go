// Command bench measures pgoutbox end to end — from a replication slot to Kafka
// acks and an independent consumer seeing every event — next to pg_recvlogical
// writing the same slot's stream to /dev/null, the speed at which the
// walsender decodes and sends. It prints one markdown report and writes it to
// -out.
//
//	go run ./bench -pgoutbox bin/pgoutbox            (make bench)
//	go run ./bench -pgoutbox bin/pgoutbox -scale 0.1 (smoke run)
//
// Cases: A, B, C drain a backlog written while pgoutbox was stopped (100k
// one-event transactions; 100k events in transactions of 100; one transaction
// of 200k events); live measures latency at a steady 2,000 events/s (live-sync,
// opt-in: the same with a synchronous standby, --sync-guard off and on); kfake
// measures the in-process broker and consumer alone; debezium drains each backlog case's
// backlog with Debezium and with pgoutbox, each into a real Apache Kafka broker
// (Java 17 and the jars of make jvm). A case that fails is reported and the
// others still run. Next to the report it draws drain.png and latency.png.
// Everything it starts is stopped and removed on every exit, Ctrl-C included.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	binary string
	cases  []string
	scale  float64
	out    string
	sqlDir string
	extra  []string // more pgoutbox flags, for experiments
	// modes are the delivery modes each backlog and live case runs in.
	modes []mode
	// exactlyOnce: this run of a case is the exactly-once one.
	exactlyOnce bool
}

// mode is a delivery mode: at-least-once, or --exactly-once with a read_committed
// consumer.
type mode struct {
	name        string
	exactlyOnce bool
}

var allModes = []mode{{"at-least-once", false}, {"exactly-once", true}}

func main() {
	if brokers := os.Getenv(sinkFloorEnv); brokers != "" {
		if err := sinkFloorChild(brokers, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// backlogCases are the backlog shapes at scale 1.
var backlogCases = []backlogCase{
	{name: "A", label: "A: 1 event/tx", events: 100_000, perTx: 1},
	{name: "B", label: "B: 100 events/tx", events: 100_000, perTx: 100},
	{name: "C", label: "C: 1 tx", events: 200_000, perTx: 200_000},
}

const (
	liveDuration   = 20 * time.Second
	ceilingRecords = 100_000
	allCases       = "A,B,C,sink,live,live-5k,kfake,debezium"
)

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var cfg config
	var cases string
	fs.StringVar(&cfg.binary, "pgoutbox", "bin/pgoutbox", "pgoutbox binary to measure (make build)")
	fs.StringVar(&cases, "cases", allCases, "comma-separated cases to run: A, B, C (backlog drains), live (latency at 2,000 ev/s), live-5k (latency at 5,000 ev/s beside the walsender's own floor: pg_recvlogical with test_decoding), sink (pgoutbox's Kafka side alone on case A's records: the CPU floor of its Kafka client), kfake (broker ceiling), debezium (cases A, B and C with Debezium and pgoutbox on real Kafka; needs Java 17 and the jars of make jvm), live-sync (live latency with a synchronous standby, --sync-guard off and on; not in the default set)")
	fs.Float64Var(&cfg.scale, "scale", 1, "multiply event counts and the live duration (0.1 for a smoke run)")
	var modes string
	fs.StringVar(&modes, "modes", "at-least-once,exactly-once", "delivery modes each backlog and live case runs in")
	fs.StringVar(&cfg.out, "out", "bench/results.md", "markdown report to write (overwritten)")
	fs.StringVar(&cfg.sqlDir, "sql", "sql", "directory with outbox.sql, publication.sql and role.sql")
	fs.Func("pgoutbox-flag", "extra argument for pgoutbox (repeatable), e.g. -pgoutbox-flag=--kafka-config=linger.ms=5", func(s string) error {
		cfg.extra = append(cfg.extra, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.scale <= 0 || math.IsNaN(cfg.scale) || math.IsInf(cfg.scale, 0) {
		return fmt.Errorf("-scale must be positive, got %v", cfg.scale)
	}
	known := map[string]bool{}
	for _, c := range strings.Split(allCases, ",") {
		known[c] = true
	}
	known["live-sync"] = true
	for _, c := range strings.Split(cases, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if !known[c] {
			return fmt.Errorf("-cases: unknown case %q (want some of %s)", c, allCases)
		}
		cfg.cases = append(cfg.cases, c)
	}
	for _, name := range strings.Split(modes, ",") {
		found := false
		for _, m := range allModes {
			if m.name == strings.TrimSpace(name) {
				cfg.modes, found = append(cfg.modes, m), true
			}
		}
		if !found {
			return fmt.Errorf("-modes: unknown mode %q (want at-least-once, exactly-once)", name)
		}
	}
	if _, err := os.Stat(cfg.binary); err != nil {
		return fmt.Errorf("pgoutbox binary: %w (build it with 'make build')", err)
	}

	say := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	rep := &report{cfg: cfg, started: time.Now(), command: command(args), loadStart: loadavg()}
	rep.machine = describeMachine(ctx, cfg.binary)
	var failed []error
	for _, name := range cfg.cases {
		modes := cfg.modes
		if name == "kfake" || name == "sink" || name == "debezium" || name == "live-sync" {
			modes = modes[:1] // not a pgoutbox mode; live-sync compares the guard instead
		}
		for _, m := range modes {
			mcfg := cfg
			mcfg.exactlyOnce = m.exactlyOnce
			if m.exactlyOnce {
				mcfg.extra = append([]string{"--exactly-once"}, cfg.extra...)
			}
			label := name
			if len(cfg.modes) > 1 && len(modes) > 1 {
				label = name + " " + m.name
			}
			err := runCase(ctx, mcfg, name, rep, say)
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted during case %s", label)
			}
			if err != nil {
				say("case %s failed: %v", label, err)
				rep.failures = append(rep.failures, fmt.Sprintf("%s: %v", label, err))
				failed = append(failed, fmt.Errorf("case %s: %w", label, err))
			}
		}
	}
	charts, err := writeCharts(rep, filepath.Dir(cfg.out))
	if err != nil {
		failed = append(failed, err)
	}
	rep.charts = charts
	text := rep.markdown()
	fmt.Print(text)
	if err := os.WriteFile(cfg.out, []byte(text), 0o644); err != nil {
		failed = append(failed, fmt.Errorf("write report: %w", err))
	}
	return errors.Join(failed...)
}

// runCase runs one case in cfg's mode and adds its result to rep.
func runCase(ctx context.Context, cfg config, name string, rep *report, say func(string, ...any)) error {
	switch name {
	case "live":
		r, err := runLive(ctx, cfg, scaleDuration(liveDuration, cfg.scale), say)
		if err == nil {
			rep.live = append(rep.live, r)
		}
		return err
	case "live-5k":
		r, err := runLiveFloor(ctx, cfg, scaleDuration(liveDuration, cfg.scale), say)
		rep.floor = append(rep.floor, r)
		return err
	case "live-sync":
		r, err := runLiveSync(ctx, cfg, scaleDuration(liveDuration, cfg.scale), say)
		rep.liveSync = append(rep.liveSync, r...)
		return err
	case "debezium":
		// Every backlog case, Debezium's runs and pgoutbox's on the same real broker.
		for _, name := range []string{"A", "B", "C"} {
			r, err := runDebezium(ctx, cfg, scaleCase(findCase(name), cfg.scale), say)
			if err != nil {
				return err
			}
			rep.debezium = append(rep.debezium, r)
		}
		live, err := runDebeziumLive(ctx, cfg, scaleDuration(liveDuration, cfg.scale), say)
		rep.debeziumLive = live
		return err
	case "sink":
		r, err := runSinkFloor(ctx, scaleCount(findCase("A").events, cfg.scale), say)
		if err == nil {
			rep.sinkFloor = &r
		}
		return err
	case "kfake":
		r, err := runCeiling(ctx, scaleCount(ceilingRecords, cfg.scale), say)
		if err == nil {
			rep.ceiling = &r
		}
		return err
	}
	c := scaleCase(findCase(name), cfg.scale)
	r, err := runBacklog(ctx, cfg, c, say)
	if err == nil {
		rep.backlog = append(rep.backlog, r)
	}
	return err
}

func findCase(name string) backlogCase {
	for _, c := range backlogCases {
		if c.name == name {
			return c
		}
	}
	panic("unknown backlog case " + name) // names were checked against allCases
}

func scaleCase(c backlogCase, scale float64) backlogCase {
	c.events = scaleCount(c.events, scale)
	if c.perTx > c.events || c.name == "C" {
		c.perTx = c.events
	}
	if c.name == "C" {
		c.label = fmt.Sprintf("C: 1 tx of %d", c.events)
	}
	return c
}

func scaleCount(n int, scale float64) int {
	return max(1, int(math.Round(float64(n)*scale)))
}

func scaleDuration(d time.Duration, scale float64) time.Duration {
	return max(time.Second, time.Duration(float64(d)*scale).Round(time.Second))
}

// command is the invocation as a developer would retype it.
func command(args []string) string {
	parts := []string{"go", "run", "./bench"}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$`\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
