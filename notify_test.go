package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/metrics"
)

// manager is the service manager's end of the notify protocol: a unixgram socket
// the test owns, and the datagrams it received.
type manager struct {
	t    *testing.T
	addr string
	msgs chan string
	last string
}

func newManager(t *testing.T, addr string) *manager {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	m := &manager{t: t, addr: addr, msgs: make(chan string, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			m.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return m
}

// expect waits for a datagram containing line, failing after timeout. It returns the
// datagrams that came before it; m.last is the one with line.
func (m *manager) expect(line string, timeout time.Duration) []string {
	m.t.Helper()
	var before []string
	deadline := time.After(timeout)
	for {
		select {
		case msg := <-m.msgs:
			for _, l := range strings.Split(strings.TrimSuffix(msg, "\n"), "\n") {
				if l == line {
					m.last = msg
					return before
				}
			}
			before = append(before, msg)
		case <-deadline:
			m.t.Fatalf("no %q within %s; got %q", line, timeout, before)
		}
	}
}

// quiet drains what arrived and fails if anything containing line arrives within d.
func (m *manager) quiet(line string, d time.Duration) {
	m.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case msg := <-m.msgs:
			if strings.Contains(msg, line) {
				m.t.Fatalf("got %q, want none", msg)
			}
		case <-deadline:
			return
		}
	}
}

// drain discards everything received so far.
func (m *manager) drain() {
	for {
		select {
		case <-m.msgs:
		case <-time.After(20 * time.Millisecond):
			return
		}
	}
}

func envFunc(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// running is a notifier run by a test: signal cancels its stop context, finish
// ends it as the relay's end would and returns run's error.
type running struct {
	signal context.CancelFunc
	once   sync.Once
	done   chan struct{}
	ended  chan error
	err    error
}

func (r *running) finish() error {
	r.once.Do(func() {
		close(r.done)
		r.err = <-r.ended
	})
	return r.err
}

// startNotifier runs a notifier on the environment's socket until the test ends.
func startNotifier(t *testing.T, env map[string]string, s notifyState, stale time.Duration) *running {
	t.Helper()
	n, err := newNotifier(envFunc(env), zerolog.Nop())
	if err != nil || n == nil {
		t.Fatalf("newNotifier: %v, %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{signal: cancel, done: make(chan struct{}), ended: make(chan error, 1)}
	go func() { r.ended <- n.run(ctx, r.done, s, stale, 10*time.Millisecond) }()
	t.Cleanup(func() {
		cancel()
		_ = r.finish()
	})
	return r
}

// TestNotifyLifecycle: STATUS while starting, READY=1 once streaming, WATCHDOG=1 only
// while the loop turns, a STATUS line for each change, STOPPING=1 on the signal and
// watchdog pings on while the relay drains.
func TestNotifyLifecycle(t *testing.T) {
	mgr := newManager(t, filepath.Join(t.TempDir(), "notify.sock"))
	m := metrics.New("test")
	stale := 150 * time.Millisecond
	n := startNotifier(t, map[string]string{"NOTIFY_SOCKET": mgr.addr, "WATCHDOG_USEC": "40000"}, m, stale)

	if before := mgr.expect("STATUS=starting", 2*time.Second); len(before) != 0 {
		t.Errorf("before the first status: %q", before)
	}
	for _, msg := range drainAll(mgr, 100*time.Millisecond) {
		if strings.Contains(msg, "READY=1") {
			t.Fatalf("READY=1 while starting: %q", msg)
		}
	}
	m.Progress()
	m.Ready("streaming")
	before := mgr.expect("READY=1", 2*time.Second)
	for _, b := range before {
		if b != "WATCHDOG=1\n" {
			t.Errorf("before READY=1: %q", b)
		}
	}
	if mgr.last != "READY=1\nSTATUS=streaming\n" {
		t.Errorf("READY datagram %q, want READY=1 and STATUS=streaming", mgr.last)
	}
	mgr.expect("WATCHDOG=1", time.Second)

	// The loop stops turning: no more pings once it is stale.
	waitUntil(t, func() bool { return !m.Alive(stale) })
	time.Sleep(30 * time.Millisecond)
	mgr.drain()
	mgr.quiet("WATCHDOG=1", 200*time.Millisecond)
	m.Progress()
	mgr.expect("WATCHDOG=1", time.Second)

	m.NotReady("kafka", "kafka brokers down")
	mgr.expect("STATUS=not ready: kafka brokers down", time.Second)
	m.Ready("kafka")
	m.NotReady("streaming", "reconnecting: server said\nDETAIL: two lines")
	mgr.expect("STATUS=not ready: reconnecting: server said DETAIL: two lines", time.Second)
	m.Ready("streaming")
	before = mgr.expect("STATUS=streaming", time.Second)
	for _, b := range before {
		if strings.Contains(b, "READY=1") {
			t.Errorf("READY=1 sent twice: %q", b)
		}
	}

	n.signal()
	mgr.expect("STOPPING=1", time.Second)
	m.Progress() // the drain turns the loop: the watchdog must go on meanwhile
	mgr.expect("WATCHDOG=1", time.Second)
	if err := n.finish(); err != nil {
		t.Errorf("run: %v", err)
	}
	mgr.quiet("STOPPING=1", 50*time.Millisecond) // once
}

func drainAll(m *manager, d time.Duration) []string {
	var got []string
	deadline := time.After(d)
	for {
		select {
		case msg := <-m.msgs:
			got = append(got, msg)
		case <-deadline:
			return got
		}
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// TestNotifyStandby: an instance that stands by because another streams from the
// slot is started (READY=1) and alive (WATCHDOG=1) although its loop never turned
// again; so is one that backfills. The relay ending sends STOPPING=1.
func TestNotifyStandby(t *testing.T) {
	mgr := newManager(t, filepath.Join(t.TempDir(), "n.sock"))
	m := metrics.New("test")
	m.Progress() // it streamed once, long ago
	time.Sleep(60 * time.Millisecond)
	m.NotReady("streaming", metrics.ReasonStandingBy)
	m.StandingBy(true)
	n := startNotifier(t, map[string]string{"NOTIFY_SOCKET": mgr.addr, "WATCHDOG_USEC": "40000"}, m, 50*time.Millisecond)
	mgr.expect("READY=1", time.Second)
	mgr.expect("WATCHDOG=1", time.Second)

	m.StandingBy(false)
	m.NotReady("streaming", "reconnecting: boom")
	mgr.expect("STATUS=not ready: reconnecting: boom", time.Second)
	mgr.drain()
	mgr.quiet("WATCHDOG=1", 150*time.Millisecond) // stale and not standing by

	_ = n.finish()
	mgr.expect("STOPPING=1", time.Second)

	mgr2 := newManager(t, filepath.Join(t.TempDir(), "n.sock"))
	m2 := metrics.New("test")
	m2.BackfillRunning.Set(1)
	startNotifier(t, map[string]string{"NOTIFY_SOCKET": mgr2.addr}, m2, time.Minute)
	mgr2.expect("READY=1", time.Second)
	mgr2.drain()
}

// TestNotifyEnvironment: no socket, no notifier; WATCHDOG_PID of another process
// disables the watchdog; an abstract socket ('@') works; a vsock address is refused.
func TestNotifyEnvironment(t *testing.T) {
	if n, err := newNotifier(envFunc(nil), zerolog.Nop()); n != nil || err != nil {
		t.Errorf("no NOTIFY_SOCKET: %v, %v", n, err)
	}
	if _, err := newNotifier(envFunc(map[string]string{"NOTIFY_SOCKET": "vsock:2:1234"}), zerolog.Nop()); err == nil {
		t.Error("vsock address accepted")
	}
	n, err := newNotifier(envFunc(map[string]string{"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": fmt.Sprint(os.Getpid() + 1)}), zerolog.Nop())
	if err != nil || n.watchdog != 0 {
		t.Errorf("WATCHDOG_PID of another process: watchdog %v, %v", n.watchdog, err)
	}
	n, err = newNotifier(envFunc(map[string]string{"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": fmt.Sprint(os.Getpid())}), zerolog.Nop())
	if err != nil || n.watchdog != time.Second {
		t.Errorf("own WATCHDOG_PID: watchdog %v, %v", n.watchdog, err)
	}

	abstract := fmt.Sprintf("@pgoutbox-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	mgr := newManager(t, abstract)
	m := metrics.New("test")
	m.Ready("streaming")
	startNotifier(t, map[string]string{"NOTIFY_SOCKET": abstract}, m, time.Minute)
	mgr.expect("READY=1", time.Second)
}
