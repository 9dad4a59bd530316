package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/pgoutbox/pgoutbox/metrics"
	"github.com/pgoutbox/pgoutbox/relay"
	"github.com/pgoutbox/pgoutbox/source"
)

// runRelay is the default command: stream the outbox to Kafka until a signal.
func runRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newRelayFlags()
	if err := f.parse(args, getenv); err != nil {
		if err == errHelp {
			f.usage(stdout, relayIntro)
		}
		return err
	}
	o, err := f.build()
	if err != nil {
		return err
	}
	log := newLogger(stderr, o.logFormat, o.logLevel)
	m := metrics.New(version)
	o.cfg.Log = log
	o.cfg.Metrics = m

	logDebezium(log, o.debezium)

	var ln net.Listener
	if o.metrics != "" {
		if ln, err = metrics.Listen(o.metrics); err != nil {
			return err
		}
		log.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics, /healthz and /readyz")
	}
	log.Info().Str("version", version).Str("postgres", source.Describe(o.cfg.PostgresURL)).
		Str("kafka", o.cfg.Kafka.Brokers).Str("slot", o.cfg.Slot).Strs("tables", o.cfg.Mapping.Tables).
		Str("topic", o.cfg.Mapping.Topic()).Str("kafka_config", o.cfg.Kafka.Redacted()).Msg("pgoutbox starting")

	notify, err := newNotifier(getenv, log)
	if err != nil {
		return err
	}
	signalled := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	stale := max(3*o.cfg.StatusInterval, 2*time.Minute)
	if ln != nil {
		g.Go(func() error { return metrics.Serve(gctx, ln, m.Handler(stale)) })
	}
	relayDone := make(chan struct{})
	if notify != nil {
		g.Go(func() error { return notify.run(signalled, relayDone, m, stale, 250*time.Millisecond) })
	}
	g.Go(func() error {
		defer cancel() // stop the metrics server when the relay ends
		defer close(relayDone)
		return relay.Run(gctx, o.cfg)
	})
	return g.Wait()
}

// newLogger builds the process logger; it is passed down, never global.
func newLogger(w io.Writer, format, level string) zerolog.Logger {
	lvl, _ := parseLevel(level)
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func parseLevel(s string) (zerolog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return zerolog.DebugLevel, nil
	case "info":
		return zerolog.InfoLevel, nil
	case "warn", "warning":
		return zerolog.WarnLevel, nil
	case "error":
		return zerolog.ErrorLevel, nil
	}
	return zerolog.InfoLevel, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}
