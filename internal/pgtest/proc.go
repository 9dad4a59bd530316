package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// account is the OS user the server runs as. initdb and postgres refuse to
// run as root, and tests (and containers) often are root, so then the
// cluster runs as the "postgres" user and owns its files.
type account struct {
	switchUser bool
	uid, gid   int
}

func serverAccount() (account, error) {
	if os.Geteuid() != 0 {
		return account{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return account{}, fmt.Errorf("pgtest: running as root needs a \"postgres\" user to run the server: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return account{}, fmt.Errorf("pgtest: postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return account{}, fmt.Errorf("pgtest: postgres gid %q: %w", u.Gid, err)
	}
	return account{switchUser: true, uid: uid, gid: gid}, nil
}

// chown gives path to the server user, so a root test process can create
// files the server must read or write.
func (a account) chown(path string) error {
	if !a.switchUser {
		return nil
	}
	if err := os.Chown(path, a.uid, a.gid); err != nil {
		return fmt.Errorf("pgtest: chown %s: %w", path, err)
	}
	return nil
}

// command returns cmd set up to run as the server user. Switching the
// credential in the child (instead of going through runuser or su) needs no
// PAM session and keeps postgres a direct child we can wait for.
func (a account) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	attr := &syscall.SysProcAttr{}
	if a.switchUser {
		attr.Credential = &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid)}
	}
	cmd.SysProcAttr = attr
	return cmd
}

// process is a running postmaster started by this package.
type process struct {
	pid    int
	exited chan struct{} // closed once the postmaster has exited
	err    error         // Wait's result, set before exited is closed
}

// startProcess starts cmd as the leader of a new process group that gets
// SIGQUIT (immediate shutdown) when the test process dies without cleaning
// up, e.g. on a go test -timeout panic.
func startProcess(cmd *exec.Cmd) (*process, error) {
	cmd.SysProcAttr.Setpgid = true
	setParentDeathSignal(cmd.SysProcAttr, syscall.SIGQUIT)
	p := &process{exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the *thread* that forked the
		// child exits. Pinning this goroutine to its thread until the
		// server exits stops the Go runtime from retiring that thread
		// under a running server.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// wait reports whether the process exited within d.
func (p *process) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// killGroup sends SIGKILL to the postmaster's process group, which also
// holds every backend it forked, and waits until no live process is left in
// it. Backends outlive a postmaster killed with SIGKILL for a moment, and
// Close promises that no process is left behind.
func (p *process) killGroup(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Kill(-p.pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) || (err == nil && !groupAlive(p.pid)) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pgtest: kill process group %d: %w", p.pid, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: process group %d still alive after %v", p.pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupAlive reports whether a process other than a zombie is in process
// group pgid. Orphaned backends are reparented to PID 1, and in containers
// whose PID 1 does not reap children they stay zombies forever: those hold
// no resources and must not make Close fail. Without /proc every member
// counts as alive.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Format: pid (comm) state ppid pgrp ...; comm may hold spaces
		// and parentheses, so parse from the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			return true
		}
	}
	return false
}

// runContext runs cmd to completion and returns its combined output; it
// kills cmd when ctx ends first.
func runContext(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.Bytes(), err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return out.Bytes(), ctx.Err()
	}
}
