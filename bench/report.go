package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// machine describes where the numbers were taken.
type machine struct {
	nproc     int
	cpu       string
	memory    string
	goVersion string
	binaryGo  string
	pgoutbox  string
}

func describeMachine(ctx context.Context, binary string) machine {
	m := machine{nproc: runtime.NumCPU(), cpu: "unknown", memory: "unknown", goVersion: runtime.Version(), binaryGo: "unknown"}
	m.cpu = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		var n int64
		if _, err := fmt.Sscanf(kb, "%d kB", &n); err == nil {
			m.memory = fmt.Sprintf("%.1f GiB", float64(n)/(1<<20))
		}
	}
	if bi, err := buildinfo.ReadFile(binary); err == nil {
		m.binaryGo = bi.GoVersion
	}
	out, err := exec.CommandContext(ctx, binary, "version").Output()
	if err != nil {
		m.pgoutbox = fmt.Sprintf("unknown (%v)", err)
	} else {
		m.pgoutbox = strings.TrimSpace(string(out))
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// report collects every case's result and renders the markdown.
type report struct {
	cfg      config
	command  string
	started  time.Time
	machine  machine
	backlog  []backlogResult
	live     []liveResult
	liveSync []syncResult
	floor    []floorResult // live-5k
	ceiling  *ceilingResult
	// sinkFloor: pgoutbox's Kafka side alone.
	sinkFloor *sinkFloorResult
	debezium  []debeziumResult
	// debeziumLive: the live load served by Debezium and pgoutbox on real Kafka.
	debeziumLive []debeziumLiveRun
	charts       []chartFile // written next to the report
	failures     []string
	loadStart    string
}

func (r *report) server() string {
	for _, b := range r.backlog {
		if b.server != "" {
			return b.server
		}
	}
	for _, l := range r.live {
		if l.server != "" {
			return l.server
		}
	}
	for _, l := range r.liveSync {
		if l.server != "" {
			return l.server
		}
	}
	return "unknown (no PostgreSQL case ran)"
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	m := r.machine
	p("# pgoutbox benchmark")
	p("")
	p("- date: %s (took %v; load average %s at start, %s at end)", r.started.UTC().Format("2006-01-02 15:04 MST"),
		time.Since(r.started).Round(time.Second), r.loadStart, loadavg())
	p("- machine: %d CPUs (nproc), %s, %s RAM", m.nproc, m.cpu, m.memory)
	p("- PostgreSQL: %s", r.server())
	p("- Go: %s (pgoutbox binary built with %s)", m.goVersion, m.binaryGo)
	p("- pgoutbox: `%s`", m.pgoutbox)
	p("- command: `%s`", r.command)
	p("")
	b.WriteString(r.chartsMarkdown())

	if len(r.backlog) > 0 {
		p("## Backlog drain")
		p("")
		p("| case | mode | events | pg_recvlogical s | pg_recvlogical ev/s | pgoutbox s | pgoutbox ev/s | ratio | vs at-least-once | peak RSS MiB | CPU µs/event |")
		p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, x := range r.backlog {
			n := float64(x.c.events)
			vs := "—"
			for _, a := range r.backlog {
				if x.exactlyOnce && !a.exactlyOnce && a.c.name == x.c.name {
					vs = fmt.Sprintf("%.2f", a.pgoutbox.Seconds()/x.pgoutbox.Seconds())
				}
			}
			p("| %s | %s | %d | %.3f | %.0f | %.3f | %.0f | %.2f | %s | %.1f | %.1f |",
				x.c.label, modeName(x.exactlyOnce), x.c.events,
				x.recvlogical.Seconds(), n/x.recvlogical.Seconds(),
				x.pgoutbox.Seconds(), n/x.pgoutbox.Seconds(),
				x.recvlogical.Seconds()/x.pgoutbox.Seconds(), vs,
				float64(x.rssKiB)/1024, float64(x.cpu.Microseconds())/n)
		}
		p("")
	}
	if len(r.live) > 0 {
		p("## Live latency (insert → independent consumer)")
		p("")
		p("| mode | rate | duration | events | p50 | p90 | p99 | max | peak RSS |")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, x := range r.live {
			p("| %s | %d ev/s | %v | %d | %s | %s | %s | %s | %.1f MiB |",
				modeName(x.exactlyOnce), x.rate, x.planned, x.events,
				ms(percentile(x.latency, 0.50)), ms(percentile(x.latency, 0.90)),
				ms(percentile(x.latency, 0.99)), ms(percentile(x.latency, 1)),
				float64(x.rssKiB)/1024)
		}
		p("")
		p("Exactly-once latency is measured by a read_committed consumer: an event counts when its Kafka transaction has committed.")
		p("")
	}
	b.WriteString(r.sinkFloorMarkdown())
	b.WriteString(r.floorMarkdown())
	b.WriteString(r.syncMarkdown())
	b.WriteString(r.debeziumMarkdown())
	p("Targets, for context (not asserted): ratio ≥ 0.85, live p99 ≤ 10 ms, peak RSS ≤ 64 MiB.")
	p("")
	if len(r.backlog) > 0 || len(r.live) > 0 {
		var rus []string
		for _, x := range r.backlog {
			rus = append(rus, fmt.Sprintf("%s %s %.1f", x.c.name, modeName(x.exactlyOnce), float64(x.rusageRSSKiB)/1024))
		}
		for _, x := range r.live {
			rus = append(rus, fmt.Sprintf("live %s %.1f", modeName(x.exactlyOnce), float64(x.rusageRSSKiB)/1024))
		}
		p("Peak RSS is pgoutbox's VmHWM from /proc/<pid>/status, sampled every 10 ms until it exits. Its rusage ru_maxrss (MiB: %s) is not used: Linux starts a vfork+exec child's ru_maxrss at the parent's peak RSS, and the parent here is this benchmark, whose in-process broker and consumer hold every event.", strings.Join(rus, ", "))
		p("")
	}

	if len(r.failures) > 0 {
		p("## Failed cases")
		p("")
		for _, f := range r.failures {
			p("- %s", strings.ReplaceAll(f, "\n", "\n  "))
		}
		p("")
	}

	p("## Correctness (independent consumer, event ids from the `id` header)")
	p("")
	for _, x := range r.backlog {
		p("- %s %s: %s%s%s", x.c.name, modeName(x.exactlyOnce), x.tally, okMark(x.tally), exitNote(x.stopErr))
	}
	for _, x := range r.live {
		p("- live %s (%d warm-up events included): %s%s%s", modeName(x.exactlyOnce), len(aggregateTypes), x.tally, okMark(x.tally), exitNote(x.stopErr))
		if x.badValue > 0 {
			p("  - %d records had no insertedAtUs in their payload", x.badValue)
		}
	}
	if r.ceiling != nil {
		p("- kfake ceiling: %s%s", r.ceiling.tally, okMark(r.ceiling.tally))
	}
	p("")

	p("## Where the time goes")
	p("")
	if len(r.backlog) > 0 {
		p("| run | wall s | walsender CPU s | client CPU s | kfake + consumer CPU s | machine busy CPU s | other processes CPU s |")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, x := range r.backlog {
			for i, run := range x.recvRuns {
				when := [2]string{"before", "after"}[i]
				p("| %s %s pg_recvlogical (%s pgoutbox) | %.3f | %.2f | %.2f | — | %.2f | %.2f |",
					x.c.name, modeName(x.exactlyOnce), when, run.wall.Seconds(), run.walsender.Seconds(), run.cpu.Seconds(),
					run.busy.Seconds(), (run.busy - run.walsender - run.cpu).Seconds())
			}
			p("| %s %s pgoutbox (first event at %.3f s) | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f |",
				x.c.name, modeName(x.exactlyOnce), x.firstEvent.Seconds(), x.pgoutbox.Seconds(), x.walsender.Seconds(), x.cpu.Seconds(),
				x.benchCPU.Seconds(), x.busy.Seconds(), (x.busy - x.walsender - x.cpu - x.benchCPU).Seconds())
		}
		p("")
		p("Client CPU is pg_recvlogical's or pgoutbox's user+sys from rusage, over its whole life (pgoutbox's includes its SIGTERM shutdown after the timed window). Walsender CPU is read from /proc every 10 ms while it serves the client. \"kfake + consumer\" is this benchmark process (in-process broker and independent consumer) during the pgoutbox run. Machine busy is all CPUs' non-idle time from /proc/stat during the run (%d CPUs, so at most %d × wall); \"other processes\" is what is left after the known processes: PostgreSQL's background processes and anything else running on the machine; noise shows up there (±0.02 s: /proc counts 10 ms ticks).", m.nproc, m.nproc)
		p("")
		for _, x := range r.backlog {
			p("- %s %s: %.0f MiB of WAL for the backlog, payload %.0f bytes on average (jsonb as text); pgoutbox used %.0f%% of one core over the timed window, %.1f µs CPU per event; it sent %s.",
				x.c.name, modeName(x.exactlyOnce), float64(x.walBytes)/(1<<20), x.payloadBytes, 100*x.cpu.Seconds()/x.pgoutbox.Seconds(), float64(x.cpu.Microseconds())/float64(x.c.events), x.produced)
		}
		p("")
	}
	for _, x := range r.live {
		p("- live %s: %d events written in %v (%.0f ev/s achieved); INSERT+COMMIT round trip p50 %s, p99 %s, max %s (included in the latency); pgoutbox CPU %.2f s (%.1f µs/event over its life, idle time included); machine busy %.0f%% of %d CPUs while writing; pgoutbox sent %s.",
			modeName(x.exactlyOnce), x.events, x.wrote.Round(time.Millisecond), float64(x.events)/x.wrote.Seconds(),
			ms(percentile(x.commit, 0.5)), ms(percentile(x.commit, 0.99)), ms(percentile(x.commit, 1)),
			x.cpu.Seconds(), float64(x.cpu.Microseconds())/float64(max(1, x.events)),
			100*x.busy.Seconds()/x.wrote.Seconds()/float64(m.nproc), m.nproc, x.produced)
	}
	if r.ceiling != nil {
		x := r.ceiling
		n := float64(x.events)
		p("- kfake ceiling (franz-go idempotent producer → in-process kfake → the same consumer, no PostgreSQL): %d records, all acked in %.3f s (%.0f ev/s), all consumed in %.3f s (%.0f ev/s); %s.",
			x.events, x.acked.Seconds(), n/x.acked.Seconds(), x.arrived.Seconds(), n/x.arrived.Seconds(), x.produced)
	}
	p("")

	p("## Method")
	p("")
	p("- Each case gets a fresh PostgreSQL cluster (pgtest, durable: fsync and synchronous_commit on; max_wal_size=8GB, checkpoint_timeout=30min) and a fresh in-process kfake broker with the topics outbox.event.{%s} pre-created, %d partitions each.", strings.Join(aggregateTypes, ","), partitions)
	p("- Backlog: slots `pgoutbox`, `twin` and `twin2` (pgoutput) are created first, then the backlog is written by a procedure committing inside a loop (synchronous_commit=off for that session; setup is not timed), then CHECKPOINT. Rows: gen_random_uuid() id, 5 aggregate types, 1000 aggregate ids, ~200-byte jsonb payload.")
	p("- pg_recvlogical: `pg_recvlogical -d <url as role pgoutbox> --slot twin --start -o proto_version=1 -o publication_names=pgoutbox -f /dev/null --no-loop --endpos <insert LSN after the backlog>` (its default status and fsync intervals), timed from process start to its exit at endpos. It runs twice, on slot `twin` before pgoutbox and on slot `twin2` after it (all three slots were created at the same point); the table shows the faster run.")
	if len(r.cfg.extra) > 0 {
		p("- pgoutbox ran with extra flags: `%s`.", strings.Join(r.cfg.extra, " "))
	}
	p("- pgoutbox: started as role pgoutbox on slot `pgoutbox`, timed from process start until the independent consumer (franz-go, reading every outbox.event.* partition from the start) holds every event id; then SIGTERM (it exits 0 after draining). Peak RSS is its VmHWM (see above), CPU is user+sys from its rusage. The drains run one after the other, never together.")
	p("- Live: pgoutbox streaming first; %d one-event transactions/s from %d connections on a fixed schedule; the payload carries clock_timestamp() taken inside the INSERT (before the commit and its fsync); arrival is the consumer's clock when the poll returned. Same machine, same clock. %d warm-up events (one per topic) before the measured period are not counted.", liveRate, liveWriters, len(aggregateTypes))
	return b.String()
}

func modeName(exactlyOnce bool) string {
	if exactlyOnce {
		return "exactly-once"
	}
	return "at-least-once"
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

func okMark(t tally) string {
	if t.ok() {
		return " — OK"
	}
	return " — **MISMATCH**"
}

func exitNote(err error) string {
	if err == nil {
		return "; pgoutbox exited 0 on SIGTERM"
	}
	return fmt.Sprintf("; pgoutbox stop: %v", strings.ReplaceAll(err.Error(), "\n", " "))
}
