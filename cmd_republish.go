package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink"
	"github.com/pgoutbox/pgoutbox/source"
)

const republishIntro = `pgoutbox republish reads the outbox rows that match an SQL condition and publishes them
to Kafka again, mapped exactly as the stream maps them (same topics, keys, values and
headers), while a running pgoutbox goes on streaming. Use it after a gap, for a consumer
that lost its data, or for a new consumer that needs the history.

Rows are read in pages ordered by --order-by and then the id column; each page is
published with an idempotent producer (acks=all) and waited for before the next, and the
position after the last acknowledged page is saved to --resume-file. Exit 0 when every
matching row is acknowledged; 1 when Kafka or the mapping refuses a row (named in the
message) or on another error; 2 on a usage error; 3 when stopped by a signal before the
end: run again with --resume to continue after the last acknowledged page.

Usage:
  pgoutbox republish --where "<SQL condition>" [--order-by column] [--batch N] [flags]
`

// exitInterrupted is republish's exit code when a signal stopped it before the end.
const exitInterrupted = 3

// republishFlags are the flags of pgoutbox republish: the connection, Kafka and
// mapping flags of the relay, and its own.
type republishFlags struct {
	*flags
	postgresURL    *string
	kafka          kafkaFlags
	mapping        mappingFlags
	log            logFlags
	where, orderBy *string
	batch          *int
	resume         *bool
	resumeFile     *string
	checkpointFile *string
}

func newRepublishFlags() *republishFlags {
	f := &republishFlags{flags: newFlags("pgoutbox republish")}
	f.postgresURL = f.postgresURLFlag()
	f.kafka = f.kafkaFlags()
	f.mapping = f.mappingFlags()
	f.log = f.logFlags()
	f.where = f.string(groupRepublish, "where", "", "SQL `condition` selecting the rows to publish again, e.g. \"created_at >= '2026-11-20 10:00'\"\n(required; --where true selects every row)")
	f.orderBy = f.string(groupRepublish, "order-by", "", "`column` to publish rows in (default: the id column); the id column breaks ties; must not be NULL")
	f.batch = f.int(groupRepublish, "batch", 1000, "rows per page: read, published and acknowledged before the next page")
	f.resume = f.bool(groupRepublish, "resume", false, "continue the republish recorded in --resume-file after its last acknowledged page\n(or start it if there is none yet)")
	f.resumeFile = f.string(groupRepublish, "resume-file", "", "`path` where the position after each acknowledged page is saved (default: --checkpoint-file + \".republish\")")
	f.checkpointFile = f.string(groupOps, "checkpoint-file", "pgoutbox.checkpoint", "the relay's checkpoint `path`; only locates the default --resume-file")
	return f
}

// republishOptions are the parsed and checked flags.
type republishOptions struct {
	postgresURL string
	kafka       sink.Config
	mapping     outbox.Config
	spec        source.Republish
	resume      bool
	stateFile   string
	logLevel    string
	logFormat   string
}

func (f *republishFlags) build() (*republishOptions, error) {
	if err := f.log.check(); err != nil {
		return nil, err
	}
	kafka, err := f.kafka.build(nil)
	if err != nil {
		return nil, err
	}
	kafka.ClientID = "pgoutbox-republish"
	mapping, err := f.mapping.build()
	if err != nil {
		return nil, err
	}
	o := &republishOptions{postgresURL: *f.postgresURL, kafka: kafka, mapping: mapping, resume: *f.resume,
		stateFile: *f.resumeFile, logLevel: *f.log.level, logFormat: *f.log.format}
	switch {
	case o.postgresURL == "":
		return nil, &usageError{errors.New("--postgres-url is required")}
	case kafka.Brokers == "":
		return nil, &usageError{errors.New("--kafka-brokers is required")}
	case strings.TrimSpace(*f.where) == "":
		return nil, &usageError{errors.New("--where is required (--where true republishes every row)")}
	case *f.batch < 1:
		return nil, &usageError{fmt.Errorf("--batch %d: want at least 1", *f.batch)}
	case len(o.mapping.Tables) != 1:
		return nil, &usageError{errors.New("republish reads one --table at a time")}
	}
	if err := o.mapping.Validate(); err != nil {
		return nil, &usageError{err}
	}
	if err := sink.CheckProperties(kafka.Properties); err != nil {
		return nil, &usageError{err}
	}
	order := *f.orderBy
	if order == "" {
		order = o.mapping.IDColumn
	}
	o.spec = source.Republish{Table: o.mapping.Tables[0], Where: *f.where, Order: order, ID: o.mapping.IDColumn, Batch: *f.batch}
	if o.stateFile == "" {
		o.stateFile = *f.checkpointFile + ".republish"
	}
	return o, nil
}

// runRepublish is `pgoutbox republish`.
func runRepublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newRepublishFlags()
	if err := f.parse(args, getenv); err != nil {
		if err == errHelp {
			f.usage(stdout, republishIntro)
		}
		return err
	}
	o, err := f.build()
	if err != nil {
		return err
	}
	var bar *progressBar
	if isTerminal(stderr) {
		bar = newProgressBar(stderr)
		stderr = bar
		defer bar.finish()
	}
	log := newLogger(stderr, o.logFormat, o.logLevel)
	st, err := startState(o)
	if err != nil {
		return err
	}
	r := &republisher{o: o, log: log, bar: bar, state: st}
	return r.run(ctx)
}

// isTerminal reports whether w is a character device (a terminal), without a
// terminal library.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startState loads the state to resume, or a fresh one when there is none. Without
// --resume, an unfinished state is not overwritten: that is most likely a forgotten
// --resume.
func startState(o *republishOptions) (republishState, error) {
	fresh := republishState{Table: o.spec.Table, Where: o.spec.Where, OrderBy: o.spec.Order}
	old, err := loadState(o.stateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// --resume of a republish that never saved a page starts it: a Job or a
		// script can always pass --resume.
		return fresh, nil
	case err != nil:
		return fresh, err
	}
	if !o.resume {
		if !old.Done {
			return fresh, &usageError{fmt.Errorf("%s holds an unfinished republish (--where %q, %d rows done): pass --resume to continue it, or delete the file to start over",
				o.stateFile, old.Where, old.Rows)}
		}
		return fresh, nil
	}
	if old.Table != fresh.Table || old.Where != fresh.Where || old.OrderBy != fresh.OrderBy {
		return fresh, &usageError{fmt.Errorf("--resume: %s is the republish of table %s --where %q --order-by %s, not of this one",
			o.stateFile, old.Table, old.Where, old.OrderBy)}
	}
	return old, nil
}

// reportsDone is how long a stopping republish waits for the acks of what it
// already produced.
const reportsDone = 30 * time.Second

// logEvery is the interval of progress log lines.
const logEvery = 5 * time.Second

// errStopped ends a page early when a signal arrived.
var errStopped = errors.New("stopped by a signal")

// run publishes page after page until the last one, a refusal or a signal.
func (r *republisher) run(ctx context.Context) error {
	o := r.o
	// Queries run to completion even after a signal: a page is bounded, and the read
	// stops between rows instead.
	qctx := context.WithoutCancel(ctx)
	conn, err := source.Connect(qctx, o.postgresURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	r.conn = conn
	if r.state.Done {
		r.log.Info().Str("state", o.stateFile).Int64("rows", r.state.Rows).Msg("this republish already finished; nothing to do")
		return nil
	}
	if r.mapper, err = outbox.NewMapper(o.mapping); err != nil {
		return &usageError{err}
	}
	total, err := conn.CountRepublish(qctx, o.spec, r.state.After)
	if err != nil {
		return err
	}
	r.total = r.state.Rows + total
	r.log.Info().Str("table", o.spec.Table).Str("where", o.spec.Where).Str("order_by", o.spec.Order).Int("batch", o.spec.Batch).
		Int64("rows", total).Int64("done_before", r.state.Rows).Str("state", o.stateFile).Str("kafka", o.kafka.Brokers).
		Msg("republish starting")
	if err := r.openProducer(false); err != nil {
		return err
	}
	defer r.closeProducer()

	r.started, r.lastLog, r.rowsAtStart = time.Now(), time.Now(), r.state.Rows
	r.bar.set(r.state.Rows, r.total)
	for {
		if ctx.Err() != nil {
			return r.stopped()
		}
		next, n, err := r.page(ctx, qctx)
		if errors.Is(err, errStopped) {
			return r.stopped()
		}
		if errors.Is(err, errRedoPage) {
			continue // the same page again, with a new producer
		}
		if err != nil {
			return err
		}
		r.state.After = next
		r.state.Rows += int64(n)
		r.state.Done = n < o.spec.Batch
		if err := saveState(o.stateFile, &r.state); err != nil {
			return err
		}
		if r.isolating && n > 0 {
			// Past the refused batch without a refusal: batch again.
			r.log.Info().Msg("no refusal when publishing one event per request; batching again")
			if err := r.openProducer(false); err != nil {
				return err
			}
		}
		r.progress(false)
		if r.state.Done {
			r.progress(true)
			r.log.Info().Int64("rows", r.state.Rows).Str("elapsed", time.Since(r.started).Round(time.Millisecond).String()).
				Msg("republish done: every matching row is acknowledged")
			return nil
		}
	}
}

// stopped ends a republish that a signal interrupted.
func (r *republisher) stopped() error {
	r.log.Warn().Int64("rows", r.state.Rows).Int64("of", r.total).Str("state", r.o.stateFile).
		Msgf("republish stopped after %d of %d rows (every page up to there is acknowledged); run it again with --resume to continue", r.state.Rows, r.total)
	return &statusError{code: exitInterrupted}
}

// progress logs every logEvery (or now, when final) and redraws the bar.
func (r *republisher) progress(final bool) {
	r.bar.set(r.state.Rows, r.total)
	if !final && time.Since(r.lastLog) < logEvery {
		return
	}
	r.lastLog = time.Now()
	elapsed := time.Since(r.started)
	rate := float64(r.state.Rows-r.rowsAtStart) / max(elapsed.Seconds(), 0.001)
	ev := r.log.Info().Int64("rows", r.state.Rows).Int64("of", r.total).Float64("rows_per_s", float64(int(rate*10))/10)
	if rate > 0 && r.total > r.state.Rows {
		ev = ev.Str("eta", (time.Duration(float64(r.total-r.state.Rows)/rate) * time.Second).Round(time.Second).String())
	}
	ev.Msg("republish progress")
}
