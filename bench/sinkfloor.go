package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
	"github.com/pgoutbox/pgoutbox/sink"
)

// sinkFloorEnv, set to a broker list, makes this binary the sink case's
// producer instead of the benchmark (see sinkFloorChild).
const sinkFloorEnv = "PGOUTBOX_BENCH_SINK_BROKERS"

// sinkFloorResult is the sink case: pgoutbox's Kafka side alone. A child
// process runs package sink's producer (librdkafka through confluent-kafka-go,
// with pgoutbox's settings, opaque and delivery-report handling) on records
// shaped like case A's, with no PostgreSQL, no decoding and no relay. Its CPU per
// event is the floor of what pgoutbox can spend with this Kafka client.
type sinkFloorResult struct {
	events   int
	window   time.Duration // first Produce → last delivery report, in the child
	winCPU   time.Duration // the child's user+sys over window
	arrived  time.Duration // child start → consumer holds every id
	tally    tally
	produced produceCount
	stopErr  error
}

// runSinkFloor runs the sink case: this binary again as the producer, against
// an in-process kfake and the same independent consumer as the backlog cases.
func runSinkFloor(ctx context.Context, events int, say func(string, ...any)) (res sinkFloorResult, err error) {
	res.events = events
	kafka, produced, err := startKafka()
	if err != nil {
		return res, err
	}
	defer kafka.Close()
	brokers := kafkatest.Brokers(kafka)
	col, err := startCollector(brokers, false, nil)
	if err != nil {
		return res, err
	}
	defer col.close()
	prefix := uuid()[:23]
	expect := make(map[string]bool, events)
	for n := range events {
		expect[sinkFloorID(prefix, n)] = true
	}
	col.expectIDs(expect)
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	os.Setenv(sinkFloorEnv, brokers)
	p, err := startProc(self, prefix, strconv.Itoa(events))
	os.Unsetenv(sinkFloorEnv)
	if err != nil {
		return res, err
	}
	defer p.kill()
	if err := col.wait(ctx, p, drainTimeout); err != nil {
		return res, err
	}
	res.arrived = col.completeAt.Sub(p.started)
	res.produced = produced.snapshot()
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
	}
	res.stopErr = p.stop(time.Second)
	time.Sleep(500 * time.Millisecond) // let duplicates arrive
	res.tally = col.tally()
	if res.stopErr != nil {
		return res, res.stopErr
	}
	var win, cpu int64
	if _, err := fmt.Sscanf(lastLine(p.out.tail(5)), "sink floor: window_ns=%d cpu_ns=%d", &win, &cpu); err != nil {
		return res, fmt.Errorf("sink floor: read the child's figures: %w; output tail:\n%s", err, p.out.tail(20))
	}
	res.window, res.winCPU = time.Duration(win), time.Duration(cpu)
	say("sink floor: %d records acked in %v, %.1f µs CPU/event in that window", events, res.window.Round(time.Millisecond), float64(res.winCPU.Microseconds())/float64(events))
	return res, nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// sinkFloorID is the n-th event id of a sink run: 36 characters like a uuid.
func sinkFloorID(prefix string, n int) string {
	return fmt.Sprintf("%s-%012d", prefix, n)
}

// sinkFloorChild is the sink case's producer: args are the id prefix and the
// event count. It produces every record through package sink as the relay does
// (one at a time, a token per event, waiting on a full queue), waits for every
// delivery report, and prints the window's length and its own CPU over it.
func sinkFloorChild(brokers string, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("sink floor: want <id prefix> <events>, got %q", args)
	}
	events, err := strconv.Atoi(args[1])
	if err != nil || events < 1 {
		return fmt.Errorf("sink floor: bad event count %q", args[1])
	}
	type record struct {
		topic      string
		key, value []byte
		id         []byte
	}
	recs := make([]record, events)
	for n := range recs {
		topic, key, value := outboxRecord(n)
		recs[n] = record{topic, key, value, []byte(sinkFloorID(args[0], n))}
	}
	p, err := sink.New(sink.Config{Brokers: brokers, ClientID: "pgoutbox-bench-sink"}, nil, zerolog.Nop())
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var acked atomic.Int64
	allAcked := make(chan struct{})
	runErr := make(chan error, 1)
	go func() {
		runErr <- p.Run(ctx, func(r *sink.Report) error {
			if r.Err != nil {
				return fmt.Errorf("delivery of event %s: %w", r.ID, r.Err)
			}
			if acked.Add(1) == int64(events) {
				close(allAcked)
			}
			return nil
		})
	}()

	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	m := sink.Message{Headers: []sink.Header{{Key: "id"}}}
	for n, r := range recs {
		m.Topic, m.Key, m.Value, m.ID = r.topic, r.key, r.value, r.id
		m.Headers[0].Value = r.id
		m.Token, m.Committed, m.Timestamp = pglogrepl.LSN(n+1), time.Now(), time.Now()
		for {
			err := p.Produce(&m)
			if err == nil {
				break
			}
			if !errors.Is(err, sink.ErrQueueFull) {
				return err
			}
			select {
			case err := <-runErr:
				return err
			case <-time.After(100 * time.Microsecond):
			}
		}
	}
	select {
	case <-allAcked:
	case err := <-runErr:
		return err
	case <-time.After(drainTimeout):
		return fmt.Errorf("sink floor: %d of %d acked after %v", acked.Load(), events, drainTimeout)
	}
	window := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
	fmt.Printf("sink floor: window_ns=%d cpu_ns=%d\n", window.Nanoseconds(), cpu)
	return nil
}

// sinkFloorMarkdown is the sink case's section of the report.
func (r *report) sinkFloorMarkdown() string {
	x := r.sinkFloor
	if x == nil {
		return ""
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	n := float64(x.events)
	p("## pgoutbox's Kafka side alone (the sink case)")
	p("")
	p("A child process runs package sink's producer (confluent-kafka-go with librdkafka %s, pgoutbox's librdkafka settings, a token per event, delivery reports drained by `Run`) on %d records shaped like case A's: no PostgreSQL, no decoding, no relay. What it spends per event is a floor for pgoutbox with this client.", confluentVersion(), x.events)
	p("")
	p("| events | first Produce → last ack s | ev/s | CPU µs/event |")
	p("| ---: | ---: | ---: | ---: |")
	p("| %d | %.3f | %.0f | %.1f |", x.events, x.window.Seconds(), n/x.window.Seconds(), float64(x.winCPU.Microseconds())/n)
	p("")
	p("CPU is the child's user+sys from its rusage over that window only: building the records beforehand, start-up and shutdown are left out, so the floor is if anything low.")
	p("")
	p("- consumer: %s%s; it sent %s.", x.tally, okMark(x.tally), x.produced)
	for _, bl := range r.backlog {
		per := float64(bl.cpu.Microseconds()) / float64(bl.c.events)
		p("- case %s %s: pgoutbox %.1f µs/event over its life (reading the WAL, decoding, mapping, the relay, start-up and shutdown included), %.1f above this floor.",
			bl.c.name, modeName(bl.exactlyOnce), per, per-float64(x.winCPU.Microseconds())/n)
	}
	p("")
	return b.String()
}

// confluentVersion is the version of the librdkafka linked into this binary,
// the same as pgoutbox's (one go.mod).
func confluentVersion() string {
	_, v := kafka.LibraryVersion()
	return v
}
