package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// netnsSeq numbers the namespaces of this test process.
var netnsSeq atomic.Int64

// netns is a network namespace joined to the host by a veth pair on a private /30.
// pgoutbox runs inside it; PostgreSQL and the broker listen on the host end. cut
// makes the link drop a service's packets silently, both ways, as a partition that
// sends no reset does: tc redirects them (mirred) into a second veth pair whose
// far end discards them (their MAC is not its own), so the sender's kernel sees
// them leave and TCP just retransmits. Nothing is refused, nothing unreachable.
// (This machine's kernel has neither netem nor a drop action, and no iptables or
// nft binary: tc's u32 classifier with mirred is what there is.)
type netns struct {
	t            *testing.T
	name         string
	host, peer   string // the link's ends: on the host, in the namespace
	sink         string // host end of the pair that swallows cut packets
	hostIP, nsIP string

	mu   sync.Mutex
	cuts map[int]int // port → tc filter preference, while cut
	pref int
}

// requireNetns makes sure the test can create network namespaces: root and ip(8).
// In CI a machine that cannot fails the test instead of skipping it.
func requireNetns(t *testing.T) {
	t.Helper()
	why := ""
	switch _, err := exec.LookPath("ip"); {
	case os.Geteuid() != 0:
		why = "network namespaces need root"
	case err != nil:
		why = "no ip(8): " + err.Error()
	default:
		if _, err := exec.LookPath("tc"); err != nil {
			why = "no tc(8): " + err.Error()
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and the partition tests cannot run: %s", why)
	}
	t.Skipf("skipping: %s", why)
}

// newNetns creates the namespace and its link and removes both when the test ends,
// also when it fails half-way.
func newNetns(t *testing.T) *netns {
	t.Helper()
	requireNetns(t)
	n := netnsSeq.Add(1)
	tok := fmt.Sprintf("%x", (os.Getpid()*64+int(n))%0xfffff)
	third, fourth := os.Getpid()%250, int(n%63)*4
	ns := &netns{
		t: t, name: "pgoutbox-e2e-" + tok,
		host: "po" + tok + "h", peer: "po" + tok + "n", sink: "po" + tok + "s",
		hostIP: fmt.Sprintf("10.213.%d.%d", third, fourth+1),
		nsIP:   fmt.Sprintf("10.213.%d.%d", third, fourth+2),
		cuts:   map[int]int{}, pref: 10,
	}
	t.Cleanup(ns.remove)
	inNS := func(args ...string) []string { return append([]string{"-n", ns.name}, args...) }
	for _, args := range [][]string{
		{"netns", "add", ns.name},
		{"link", "add", ns.host, "type", "veth", "peer", "name", ns.peer},
		{"link", "set", ns.peer, "netns", ns.name},
		{"addr", "add", ns.hostIP + "/30", "dev", ns.host},
		{"link", "set", ns.host, "up"},
		inNS("addr", "add", ns.nsIP+"/30", "dev", ns.peer),
		inNS("link", "set", ns.peer, "up"),
		inNS("link", "set", "lo", "up"),
		{"link", "add", ns.sink, "type", "veth", "peer", "name", ns.sink + "v"},
		{"link", "set", ns.sink + "v", "netns", ns.name},
		{"link", "set", ns.sink, "up"},
		inNS("link", "set", ns.sink+"v", "up"),
	} {
		ns.run("ip", args...)
	}
	ns.run("tc", "qdisc", "add", "dev", ns.host, "clsact")
	return ns
}

// run runs a command that must succeed.
func (ns *netns) run(name string, args ...string) {
	ns.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		ns.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// remove deletes the namespace (and with it the ends inside, which takes their
// peers) and whatever link is left, then checks that nothing is.
func (ns *netns) remove() {
	_ = exec.Command("ip", "netns", "del", ns.name).Run()
	for _, link := range []string{ns.host, ns.sink} {
		_ = exec.Command("ip", "link", "del", link).Run()
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), ns.name) {
		ns.t.Errorf("network namespace %s left behind", ns.name)
	}
	for _, link := range []string{ns.host, ns.sink} {
		if exec.Command("ip", "link", "show", link).Run() == nil {
			ns.t.Errorf("link %s left behind", link)
		}
	}
}

// cut drops every packet of the TCP services on ports, both ways, silently.
func (ns *netns) cut(ports ...int) {
	ns.t.Helper()
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, port := range ports {
		if _, ok := ns.cuts[port]; ok {
			continue
		}
		ns.pref++
		pref := fmt.Sprint(ns.pref)
		// To the namespace the service's packets leave the host end (egress)
		// from the port; from it they arrive there (ingress) for the port.
		for _, f := range [][2]string{{"egress", "sport"}, {"ingress", "dport"}} {
			ns.run("tc", "filter", "add", "dev", ns.host, f[0], "pref", pref, "protocol", "ip",
				"u32", "match", "ip", "protocol", "6", "0xff", "match", "ip", f[1], fmt.Sprint(port), "0xffff",
				"action", "mirred", "egress", "redirect", "dev", ns.sink)
		}
		ns.cuts[port] = ns.pref
	}
}

// heal lets the packets of ports through again.
func (ns *netns) heal(ports ...int) {
	ns.t.Helper()
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, port := range ports {
		pref, ok := ns.cuts[port]
		if !ok {
			continue
		}
		for _, dir := range []string{"egress", "ingress"} {
			ns.run("tc", "filter", "del", "dev", ns.host, dir, "pref", fmt.Sprint(pref))
		}
		delete(ns.cuts, port)
	}
}

// start runs the pgoutbox binary inside the namespace with exactly args, as
// env.startArgs does outside it.
func (e *env) startIn(ns *netns, args []string) *proc {
	e.t.Helper()
	p := &proc{t: e.t, out: &syncBuffer{}, done: make(chan struct{})}
	// ip netns exec enters the namespace and execs the binary: the pid is
	// pgoutbox's own, so signals and the parent-death signal reach it.
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.name, binary}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("start pgoutbox in %s: %v", ns.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	seq := procSeq.Add(1)
	e.t.Cleanup(func() {
		p.kill()
		if dir := os.Getenv("E2E_LOG_DIR"); dir != "" {
			name := fmt.Sprintf("%s-%03d.log", strings.ReplaceAll(e.t.Name(), "/", "_"), seq)
			_ = os.WriteFile(filepath.Join(dir, name), []byte(p.out.String()), 0o644)
		}
		if out := p.out.String(); strings.Contains(out, "WARNING: DATA RACE") {
			e.t.Errorf("the race detector found a data race in pgoutbox:\n%s", out[strings.Index(out, "WARNING: DATA RACE"):])
		}
		if e.t.Failed() {
			e.t.Logf("pgoutbox output:\n%s", tail(p.out.String(), 60))
		}
	})
	return p
}

// TestNetnsCutIsSilent checks the partition itself: across a cut link a write
// succeeds (into the send buffer) and nothing arrives, no error or reset comes;
// after heal the same connection delivers what was written meanwhile.
func TestNetnsCutIsSilent(t *testing.T) {
	ns := newNetns(t)
	l, err := net.Listen("tcp", net.JoinHostPort(ns.hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	var mu sync.Mutex
	var read strings.Builder
	eof := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			eof <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			mu.Lock()
			read.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				eof <- err
				return
			}
		}
	}()
	sofar := func() string {
		mu.Lock()
		defer mu.Unlock()
		return read.String()
	}
	// The client runs in the namespace: a shell's /dev/tcp keeps this free of
	// tools the machine may lack.
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d; printf before >&3; sleep 1.5; printf during >&3; sleep 3; printf after >&3; exec 3>&-`, ns.hostIP, port)
	client := exec.Command("ip", "netns", "exec", ns.name, "bash", "-c", script)
	client.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	client.Stdout, client.Stderr = &out, &out
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	ns.cut(port)
	time.Sleep(2 * time.Second) // "during" was written half a second ago
	if got := sofar(); got != "before" {
		t.Fatalf("during the cut the server read %q, want only %q", got, "before")
	}
	ns.heal(port)
	if err := client.Wait(); err != nil {
		t.Fatalf("the client failed across the cut (not silent?): %v\n%s", err, out.String())
	}
	select {
	case err := <-eof:
		if !errors.Is(err, io.EOF) {
			t.Errorf("server read ended with %v, want EOF", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server never got the end of the stream after heal")
	}
	if got := sofar(); got != "beforeduringafter" {
		t.Errorf("server read %q, want everything once, in order", got)
	}
}
