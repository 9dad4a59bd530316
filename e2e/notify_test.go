package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serviceManager is the service manager's end of sd_notify: a unixgram socket the
// test owns, collecting the datagrams pgoutbox sends to it.
type serviceManager struct {
	t    *testing.T
	path string
	msgs chan string
}

func newServiceManager(t *testing.T) *serviceManager {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	sm := &serviceManager{t: t, path: path, msgs: make(chan string, 10000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			sm.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return sm
}

// expect waits for a datagram with the line want and returns that datagram.
func (sm *serviceManager) expect(want string, timeout time.Duration) string {
	sm.t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case msg := <-sm.msgs:
			for _, l := range strings.Split(msg, "\n") {
				if l == want {
					return msg
				}
			}
			seen = append(seen, msg)
		case <-deadline:
			sm.t.Fatalf("no %q from pgoutbox within %s; got %q", want, timeout, seen)
		}
	}
}

// TestSystemdNotify: run as a Type=notify service would be, pgoutbox sends READY=1
// with STATUS=streaming once it streams, WATCHDOG=1 at half of WATCHDOG_USEC, and
// STOPPING=1 on SIGTERM before it exits 0. A second instance on the slot reports
// itself ready as a standby, and pings the watchdog while it waits.
func TestSystemdNotify(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.exec(`CREATE TABLE public.pgoutbox_checkpoint (slot text PRIMARY KEY, lsn pg_lsn NOT NULL, system_id text NOT NULL,
		database text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
		GRANT SELECT, INSERT, UPDATE ON public.pgoutbox_checkpoint TO pgoutbox`)
	store := []string{"--checkpoint-store", "postgres", "--standby-retry", "300ms"}

	sm := newServiceManager(t)
	a := e.startEnv([]string{"NOTIFY_SOCKET=" + sm.path, "WATCHDOG_USEC=400000"}, store...)
	if msg := sm.expect("READY=1", 30*time.Second); !strings.Contains(msg, "STATUS=streaming\n") {
		t.Errorf("READY=1 came as %q, want it with STATUS=streaming", msg)
	}
	a.waitLog(`"streaming"`, 5*time.Second)
	sm.expect("WATCHDOG=1", 5*time.Second)
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "T", Payload: `{}`})
	e.consumeN(1, 30*time.Second)

	sb := newServiceManager(t)
	b := e.startEnv([]string{"NOTIFY_SOCKET=" + sb.path, "WATCHDOG_USEC=400000"}, store...)
	if msg := sb.expect("READY=1", 30*time.Second); !strings.Contains(msg, "STATUS=standing by: ") {
		t.Errorf("the standby's READY=1 came as %q, want it with STATUS=standing by", msg)
	}
	b.waitLog("standing by", 5*time.Second)
	sb.expect("WATCHDOG=1", 5*time.Second)

	a.signal(syscall.SIGTERM)
	sm.expect("STOPPING=1", 10*time.Second)
	if code := a.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	// The standby takes over and says so.
	sb.expect("STATUS=streaming", 30*time.Second)
	b.signal(syscall.SIGTERM)
	sb.expect("STOPPING=1", 10*time.Second)
	if code := b.wait(30 * time.Second); code != 0 {
		t.Fatalf("standby exit code %d after SIGTERM", code)
	}
}
