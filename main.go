// Command pgoutbox publishes a PostgreSQL transactional outbox table to Kafka through
// logical replication.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := profile(os.Getenv("PGOUTBOX_CPUPROFILE"))
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	stopProfile()
	os.Exit(exitCode(err, os.Stderr))
}

// profile writes a CPU profile of the whole run to path (PGOUTBOX_CPUPROFILE, for
// performance work: go tool pprof pgoutbox path) and returns what stops it.
func profile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgoutbox: PGOUTBOX_CPUPROFILE: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "pgoutbox: PGOUTBOX_CPUPROFILE: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitCode prints err and maps it to the process exit code.
func exitCode(err error, stderr io.Writer) int {
	var usage *usageError
	var status *statusError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "pgoutbox: %v\nRun 'pgoutbox --help' for usage.\n", err)
		return 2
	case errors.As(err, &status):
		return status.code
	default:
		fmt.Fprintf(stderr, "pgoutbox: %v\n", err)
		return 1
	}
}

// run dispatches the subcommands; with no subcommand it publishes.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "run":
			return runRelay(ctx, args[1:], stdout, stderr)
		case "status":
			return runStatus(ctx, args[1:], stdout, stderr)
		case "republish":
			return runRepublish(ctx, args[1:], stdout, stderr)
		case "debezium-config":
			return runDebeziumConfig(args[1:], stdout)
		case "version":
			fmt.Fprintf(stdout, "pgoutbox %s\n", version)
			return nil
		case "help":
			return runRelay(ctx, []string{"--help"}, stdout, stderr)
		}
	}
	return runRelay(ctx, args, stdout, stderr)
}
