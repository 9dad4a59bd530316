package jvm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"time"
)

// Process is a running JVM, the leader of its own process group. It writes its output
// to a log file.
type Process struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed once the JVM exited
	err    error         // Wait's result, set before exited is closed
}

// Start runs java with jvmArgs, then mainClass and args, class path cp, appending its
// stdout and stderr to logFile. It configures log4j2 to print to stdout with levels,
// logger name to level; "root" sets the root logger's (default INFO). The JVM gets SIGKILL if the thread that
// started it dies (a test binary killed on timeout leaves nothing behind).
func Start(cp string, jvmArgs []string, mainClass string, args []string, logFile string, levels map[string]string) (*Process, error) {
	java, err := Java()
	if err != nil {
		return nil, err
	}
	logCfg := filepath.Join(filepath.Dir(logFile), filepath.Base(logFile)+".log4j2.properties")
	if err := os.WriteFile(logCfg, []byte(log4j2Config(levels)), 0o644); err != nil {
		return nil, fmt.Errorf("jvm: %w", err)
	}
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("jvm: %w", err)
	}
	fmt.Fprintf(log, "---- %s: starting %s\n", time.Now().Format(time.RFC3339Nano), mainClass)
	full := append([]string{}, jvmArgs...)
	full = append(full, "-Dlog4j2.configurationFile="+logCfg, "-cp", cp, mainClass)
	full = append(full, args...)
	cmd := exec.Command(java, full...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{cmd: cmd, log: log, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked the child
		// exits: keep this goroutine on its thread while the JVM runs.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		log.Close()
		return nil, fmt.Errorf("jvm: start %s: %w", mainClass, err)
	}
	return p, nil
}

// Exited is closed once the JVM exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the JVM's exit status once Exited is closed.
func (p *Process) Err() error {
	select {
	case <-p.exited:
		return p.err
	default:
		return nil
	}
}

// Running reports whether the JVM is still running.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Pid is the JVM's process id, also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the JVM's process group.
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("jvm: signal %v: %w", sig, err)
	}
	return nil
}

// Stop sends SIGTERM to the process group and waits up to grace for the JVM to exit,
// then sends SIGKILL and waits for it. It returns an error only when the JVM did not
// exit on SIGTERM.
func (p *Process) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.exited
	return fmt.Errorf("jvm: pid %d did not exit within %s of SIGTERM; killed", p.Pid(), grace)
}

// Kill sends SIGKILL to the process group and waits for the JVM to exit.
func (p *Process) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.exited
}

func log4j2Config(levels map[string]string) string {
	root := levels["root"]
	if root == "" {
		root = "INFO"
	}
	s := `status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ` + root + `
rootLogger.appenderRef.out.ref = out
`
	names := make([]string, 0, len(levels))
	for name := range levels {
		if name != "root" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for i, name := range names {
		s += fmt.Sprintf("logger.l%d.name = %s\nlogger.l%d.level = %s\n", i, name, i, levels[name])
	}
	return s
}

// Tail returns the last n lines of a log file, for a failure message.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	return lastLines(string(b), n)
}
