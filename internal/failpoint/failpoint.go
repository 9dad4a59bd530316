// Package failpoint kills the process at named points, for crash tests.
//
// PGOUTBOX_FAILPOINT="name" or "name=N" makes the Nth Hit("name") (default the first)
// send SIGKILL to the process itself: the crash a power cut or an OOM kill causes,
// with no deferred function, flush or exit handler running. Unset, Hit costs one
// atomic load.
package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

var (
	once   sync.Once
	armed  atomic.Bool
	name   string
	remain atomic.Int64
)

func load() {
	spec := os.Getenv("PGOUTBOX_FAILPOINT")
	if spec == "" {
		return
	}
	n := int64(1)
	if k, v, ok := strings.Cut(spec, "="); ok {
		spec = k
		if c, err := strconv.ParseInt(v, 10, 64); err == nil && c > 0 {
			n = c
		}
	}
	name = spec
	remain.Store(n)
	armed.Store(true)
}

// Hit kills the process if the failpoint p is armed and due.
func Hit(p string) {
	once.Do(load)
	if !armed.Load() || p != name {
		return
	}
	if remain.Add(-1) == 0 {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not deliverable late; never return
	}
}
