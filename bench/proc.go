package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a subprocess the benchmark started: pgoutbox or pg_recvlogical. Its
// output is kept (the tail only) to explain a failure.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *tailBuffer
	started time.Time
	exited  chan struct{} // closed once Wait returned
	err     error         // Wait's result, set before exited is closed
}

// startProc starts name with args. The child gets SIGKILL if the benchmark
// dies without stopping it.
func startProc(name string, args ...string) (*proc, error) {
	return startProcOut(name, nil, args...)
}

// startProcOut is startProc with the child's standard output going to stdout
// (the kept tail when nil); standard error still goes to the tail.
func startProcOut(name string, stdout io.Writer, args ...string) (*proc, error) {
	p := &proc{name: name, out: &tailBuffer{max: 64 << 10}, exited: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits up to grace for the exit, then kills. It
// returns the exit error, or an error if it had to kill. Calling it on an
// exited process only returns how it exited.
func (p *proc) stop(grace time.Duration) error {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, grace)
		}
	}
	if p.err != nil {
		return fmt.Errorf("%s: %w; output tail:\n%s", p.name, p.err, p.out.tail(20))
	}
	return nil
}

// kill ends the process at once; for error paths.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// usage is the exited process's peak RSS and CPU time, from wait4's rusage.
func (p *proc) usage() (rssKiB int64, cpu time.Duration) {
	if p.running() || p.cmd.ProcessState == nil {
		return 0, 0
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, 0
	}
	return ru.Maxrss, time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tailBuffer keeps the last max bytes written to it; subprocess output can be
// large and only its end explains a failure.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) tail(lines int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ls := strings.Split(strings.TrimRight(string(t.b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, which
// Linux fixes at 100 for the user ABI.
const userHZ = 100

// procCPU reads the user+system CPU time of a live process from
// /proc/<pid>/stat; it is how the benchmark sees the walsender's CPU, a
// process it did not start.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Format: pid (comm) state ppid ... utime(14) stime(15); comm may hold
	// spaces, so count fields from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc stat: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// procHWM reads a live process's peak resident set size (VmHWM) in KiB from
// /proc/<pid>/status. Unlike ru_maxrss it belongs to the process's own
// address space: ru_maxrss of a child started with vfork+exec, as os/exec
// does, starts at the parent's peak RSS, so a child of this benchmark (whose
// broker and consumer hold every event) would report the benchmark's size.
func procHWM(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc status (process exited?)")
}

// sampler follows a reading of a process until it exits, keeping the last
// one; it measures the walsenders' CPU (processes the benchmark did not start,
// which end with their client) and pgoutbox's peak RSS up to its exit.
type sampler struct {
	stopc chan struct{}
	done  chan struct{}
	last  int64
}

func sample(pid int, every time.Duration, read func(pid int) (int64, error)) *sampler {
	s := &sampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			v, err := read(pid)
			if err != nil {
				return // exited
			}
			s.last = v
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func sampleCPU(pid int, every time.Duration) *sampler {
	return sample(pid, every, func(pid int) (int64, error) {
		d, err := procCPU(pid)
		return int64(d), err
	})
}

func sampleHWM(pid int, every time.Duration) *sampler {
	return sample(pid, every, procHWM)
}

// stop ends sampling and returns the last reading.
func (s *sampler) stop() int64 {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	<-s.done
	return s.last
}

// wait waits until the process is gone and returns the last reading.
func (s *sampler) wait() int64 {
	<-s.done
	return s.last
}

// machineCPU reads the machine-wide busy and total CPU time from /proc/stat.
// Over a timed run, busy minus the CPU of the processes the benchmark knows
// about is what others used: on a shared machine that explains noise.
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var sum, idle int64
	for i, s := range f[1:] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0
		}
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		sum += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return time.Duration(sum-idle) * time.Second / userHZ, time.Duration(sum) * time.Second / userHZ
}

// loadavg is /proc/loadavg's first three fields.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
