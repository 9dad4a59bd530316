package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// notifier speaks systemd's service notification protocol (sd_notify(3)): one
// datagram of newline-separated VAR=value assignments per message, sent to the
// AF_UNIX datagram socket named by $NOTIFY_SOCKET (a leading '@' is Linux's abstract
// namespace, which Go's net package maps to the leading NUL byte). No library: the
// protocol is those few lines.
type notifier struct {
	addr *net.UnixAddr
	// watchdog is the interval the service manager expects WATCHDOG=1 at most; 0
	// when it watches nothing.
	watchdog time.Duration
	log      zerolog.Logger
}

// notifyState is what the notifier reads of pgoutbox's state (*metrics.Metrics).
type notifyState interface {
	IsReady() (bool, string)
	IsStandingBy() bool
	Backfilling() bool
	Alive(stale time.Duration) bool
}

// newNotifier returns nil when no service manager listens ($NOTIFY_SOCKET unset).
func newNotifier(getenv func(string) string, log zerolog.Logger) (*notifier, error) {
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: only AF_UNIX socket paths are supported", path)
	}
	n := &notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}, log: log}
	// WATCHDOG_PID, when set, names the process the watchdog is meant for
	// (sd_watchdog_enabled(3)); a child that inherited the variables must not answer.
	if pid := getenv("WATCHDOG_PID"); pid == "" || pid == strconv.Itoa(os.Getpid()) {
		if usec, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
			n.watchdog = time.Duration(usec) * time.Microsecond
		}
	}
	return n, nil
}

// send sends one notification from a socket of its own, as sd_notify does: the
// manager may have re-created its socket since the last one.
func (n *notifier) send(lines ...string) error {
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("notify %s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("notify %s: %w", n.addr.Name, err)
	}
	return nil
}

// status describes the state in one STATUS= line, and says whether the service
// counts as started: streaming, standing by, or backfilling.
func status(s notifyState) (string, bool) {
	ready, reason := s.IsReady()
	switch {
	case ready:
		return "streaming", true
	case s.IsStandingBy():
		return "standing by: " + reason, true
	case s.Backfilling():
		return "backfilling existing rows", true
	case reason == "" || reason == "starting":
		return "starting", false
	}
	return "not ready: " + reason, false
}

// run sends READY=1 once the service counts as started, STATUS= on every change,
// WATCHDOG=1 every half watchdog interval while the replication loop is alive
// (turned within stale), and STOPPING=1 when stop ends (the signal context) or the
// relay ended (done closed). It returns when done is closed. A failed send is
// logged, never fatal: the notifications help the service manager, pgoutbox works
// without them.
func (n *notifier) run(stop context.Context, done <-chan struct{}, s notifyState, stale, poll time.Duration) error {
	var ping <-chan time.Time
	if n.watchdog > 0 {
		t := time.NewTicker(n.watchdog / 2)
		defer t.Stop()
		ping = t.C
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var last string
	ready, stopping, failed := false, false, false
	warn := func(err error) {
		if err != nil && !failed {
			failed = true // once: a missing socket would repeat on every poll
			n.log.Warn().Err(err).Msg("cannot notify the service manager")
		}
	}
	update := func() {
		if stopping {
			return
		}
		st, started := status(s)
		var lines []string
		if started && !ready {
			ready = true
			lines = append(lines, "READY=1")
		}
		if st != last {
			last = st
			// One line: a newline would start another assignment.
			lines = append(lines, "STATUS="+strings.Join(strings.Fields(st), " "))
		}
		if len(lines) > 0 {
			warn(n.send(lines...))
		}
	}
	stopNow := func() {
		if !stopping {
			stopping = true
			warn(n.send("STOPPING=1", "STATUS=stopping: publishing what is in flight"))
		}
	}
	update()
	for {
		select {
		case <-done:
			stopNow()
			return nil
		case <-stop.Done():
			stopNow()
			stop = context.Background() // keep pinging the watchdog while the relay drains
		case <-tick.C:
			update()
		case <-ping:
			if s.Alive(stale) {
				warn(n.send("WATCHDOG=1"))
			}
		}
	}
}
