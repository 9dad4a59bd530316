// Package pgtest starts throwaway PostgreSQL clusters for integration tests,
// the fault-injection suite, benchmarks and the local dev stack.
//
// A cluster is a real postgres server (never a mock: pgoutbox depends on the
// exact behaviour of logical replication) in its own temporary directory,
// listening on 127.0.0.1 with trust authentication and wal_level=logical. The
// core API takes no *testing.T so non-test programs can use it; New adds the
// testing conveniences.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// startTimeout bounds how long Start waits for the server to accept
	// connections when ctx has no earlier deadline.
	startTimeout = 60 * time.Second
	// stopTimeout bounds how long Stop waits for the postmaster to exit.
	stopTimeout = 60 * time.Second
	// superuser is the bootstrap superuser initdb creates.
	superuser = "postgres"
	// confName is the file, included from postgresql.conf, holding every
	// setting pgtest makes.
	confName = "pgtest.conf"
)

// Options configures a cluster. The zero value is a fast, non-durable
// cluster on a free port.
type Options struct {
	// Settings are extra postgresql.conf settings, e.g.
	// {"wal_sender_timeout": "5s"}. They win over pgtest's own settings,
	// except "port": use Port for that.
	Settings map[string]string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Durable keeps PostgreSQL's default fsync, full_page_writes and
	// synchronous_commit. Without it all three are off for speed, and a
	// commit acknowledged just before an immediate stop may be lost, so
	// crash tests and benchmarks set it.
	Durable bool
	// Logf, if set, receives server start and stop messages.
	Logf func(format string, args ...any)
	// Listen are addresses the server listens on besides 127.0.0.1, e.g.
	// the host end of a veth pair that a test's network namespace reaches.
	// They must exist when the server starts.
	Listen []string
	// TrustNets are networks (CIDR) whose clients pg_hba.conf trusts besides
	// 127.0.0.1, for regular and replication connections: the clients
	// behind Listen. Only for throwaway clusters on private networks.
	TrustNets []string
}

// Cluster is one PostgreSQL server and the directory it lives in. Its
// methods are safe for concurrent use.
type Cluster struct {
	// DataDir is the cluster's data directory (PGDATA).
	DataDir string
	// Port is the TCP port the server listens on at 127.0.0.1.
	Port int

	root    string // every file the cluster owns lives below it
	opts    Options
	bin     string
	acct    account
	logPath string
	logf    func(format string, args ...any)

	mu     sync.Mutex
	proc   *process // nil until started and after a Stop
	closed bool
}

// Start creates a cluster with initdb in a new temporary directory and starts
// it. On error nothing is left behind.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	if err := c.init(ctx, opts); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.startOnPort(ctx, opts); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// newCluster checks the options and makes the cluster's directory.
func newCluster(opts Options) (*Cluster, error) {
	if _, ok := opts.Settings["port"]; ok {
		return nil, errors.New("pgtest: set the port with Options.Port, not Settings")
	}
	for _, k := range []string{"listen_addresses", "unix_socket_directories"} {
		if _, ok := opts.Settings[k]; ok {
			return nil, fmt.Errorf("pgtest: %s is pgtest's; use Options.Listen for more addresses", k)
		}
	}
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	acct, err := serverAccount()
	if err != nil {
		return nil, err
	}
	root, err := makeRoot(acct)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		DataDir: filepath.Join(root, "data"),
		root:    root,
		opts:    opts,
		bin:     bin,
		acct:    acct,
		logPath: filepath.Join(root, "postgres.log"),
		logf:    opts.Logf,
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	return c, nil
}

// startOnPort writes pgtest.conf and starts the server on opts.Port, or on a
// free port: one picked by us can be taken by someone else before the server
// binds it, and then it tries another.
func (c *Cluster) startOnPort(ctx context.Context, opts Options) error {
	for attempt := 1; ; attempt++ {
		c.Port = opts.Port
		if c.Port == 0 {
			var err error
			if c.Port, err = freePort(); err != nil {
				return err
			}
		}
		err := c.writeConf(opts)
		if err == nil {
			err = c.Start(ctx)
		}
		if err == nil {
			return nil
		}
		if opts.Port != 0 || attempt == 3 || !strings.Contains(err.Error(), "could not bind") {
			return err
		}
	}
}

// makeRoot creates the cluster's temporary directory. The server's Unix
// socket lives in it, and socket paths are limited to 107 bytes, so a long
// TMPDIR falls back to /tmp.
func makeRoot(acct account) (string, error) {
	dir := os.TempDir()
	if len(dir) > 60 {
		dir = "/tmp"
	}
	root, err := os.MkdirTemp(dir, "pgtest-")
	if err != nil {
		return "", fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	if err := acct.chown(root); err != nil {
		os.RemoveAll(root)
		return "", err
	}
	return root, nil
}

// init runs initdb and writes pg_hba.conf. Every cluster runs initdb instead
// of copying a cached template: a copy would share the template's database
// system identifier, and pgoutbox compares that identifier to tell one
// cluster's LSNs from another's.
func (c *Cluster) init(ctx context.Context, opts Options) error {
	start := time.Now()
	cmd := c.acct.command(filepath.Join(c.bin, "initdb"),
		"-D", c.DataDir, "-U", superuser, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Dir = c.root
	if out, err := runContext(ctx, cmd); err != nil {
		if c.acct.switchUser && errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("pgtest: initdb: %w (the postgres user must be able to reach %s: set TMPDIR to a directory it can enter)", err, c.root)
		}
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	c.logf("pgtest: initdb %s took %v", c.DataDir, time.Since(start).Round(time.Millisecond))

	// Trust everyone from localhost, including replication connections,
	// so tests can use least-privilege roles without passwords.
	hba := "local all all trust\n" +
		"host all all 127.0.0.1/32 trust\n" +
		"local replication all trust\n" +
		"host replication all 127.0.0.1/32 trust\n"
	for _, n := range opts.TrustNets {
		if _, _, err := net.ParseCIDR(n); err != nil {
			return fmt.Errorf("pgtest: TrustNets: %w", err)
		}
		hba += "host all all " + n + " trust\nhost replication all " + n + " trust\n"
	}
	if err := c.writeFile("pg_hba.conf", hba); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgtest: open postgresql.conf: %w", err)
	}
	_, err = fmt.Fprintf(f, "\ninclude '%s'\n", confName)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgtest: append to postgresql.conf: %w", err)
	}
	return nil
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// writeConf writes pgtest.conf: pgtest's settings, then Options.Settings,
// which win because later lines override earlier ones.
func (c *Cluster) writeConf(opts Options) error {
	var b strings.Builder
	set := func(k, v string) {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(v, "'", "''"))
	}
	set("listen_addresses", strings.Join(append([]string{"127.0.0.1"}, opts.Listen...), ","))
	set("port", strconv.Itoa(c.Port))
	set("unix_socket_directories", c.root)
	set("wal_level", "logical")
	set("max_replication_slots", "32")
	set("max_wal_senders", "32")
	set("logging_collector", "off")
	if !opts.Durable {
		set("fsync", "off")
		set("full_page_writes", "off")
		set("synchronous_commit", "off")
	}
	keys := make([]string, 0, len(opts.Settings))
	for k := range opts.Settings {
		if !settingName.MatchString(k) {
			return fmt.Errorf("pgtest: invalid setting name %q", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k, opts.Settings[k])
	}
	return c.writeFile(confName, b.String())
}

// writeFile writes a file in the data directory, owned by the server user.
func (c *Cluster) writeFile(name, content string) error {
	path := filepath.Join(c.DataDir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("pgtest: write %s: %w", name, err)
	}
	return c.acct.chown(path)
}

// Start starts the server again after Stop, with the same directory and
// port, and returns once it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: start: cluster is closed")
	}
	if c.proc != nil && c.proc.running() {
		return errors.New("pgtest: start: server is already running")
	}
	c.proc = nil
	start := time.Now()
	log, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: open server log: %w", err)
	}
	cmd := c.acct.command(filepath.Join(c.bin, "postgres"), "-D", c.DataDir)
	cmd.Dir = c.root
	cmd.Stdout, cmd.Stderr = log, log
	p, err := startProcess(cmd)
	log.Close()
	if err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	if err := c.waitReady(ctx, p); err != nil {
		if p.running() {
			syscall.Kill(p.pid, syscall.SIGQUIT)
			if !p.wait(10 * time.Second) {
				p.killGroup(10 * time.Second)
			}
		}
		return err
	}
	c.proc = p
	c.logf("pgtest: postgres started on 127.0.0.1:%d in %v (data %s)", c.Port, time.Since(start).Round(time.Millisecond), c.DataDir)
	return nil
}

// waitReady polls until the server accepts a connection, it exits, or the
// start timeout passes.
func (c *Cluster) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		err := c.ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("pgtest: postgres exited during start (%v); log tail:\n%s", p.err, c.logTail(20))
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready: %w (last error: %v); log tail:\n%s", ctx.Err(), err, c.logTail(20))
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// ping connects and checks that the server is this cluster's: when the port
// is taken, another server answers while ours fails to bind.
func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.SuperURL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		return err
	}
	if dir != c.DataDir {
		return fmt.Errorf("port %d is served by another cluster (data directory %s)", c.Port, dir)
	}
	return nil
}

// stopSignals maps pg_ctl's shutdown modes to the postmaster signals that
// implement them.
var stopSignals = map[string]syscall.Signal{
	"smart":     syscall.SIGTERM,
	"fast":      syscall.SIGINT,
	"immediate": syscall.SIGQUIT,
}

// Stop shuts the server down like `pg_ctl stop -m mode -w`: mode is smart,
// fast or immediate. Immediate is a crash: the next start runs recovery.
func (c *Cluster) Stop(mode string) error {
	sig, ok := stopSignals[mode]
	if !ok {
		return fmt.Errorf("pgtest: stop: unknown mode %q (want smart, fast or immediate)", mode)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.proc
	if p == nil || !p.running() {
		c.proc = nil
		return errors.New("pgtest: stop: server is not running")
	}
	if err := syscall.Kill(p.pid, sig); err != nil {
		return fmt.Errorf("pgtest: stop: signal postmaster %d: %w", p.pid, err)
	}
	if !p.wait(stopTimeout) {
		return fmt.Errorf("pgtest: stop -m %s: postmaster %d still running after %v", mode, p.pid, stopTimeout)
	}
	c.proc = nil
	c.logf("pgtest: postgres on 127.0.0.1:%d stopped (-m %s)", c.Port, mode)
	return nil
}

// Restart stops the server with mode and starts it again.
func (c *Cluster) Restart(ctx context.Context, mode string) error {
	if err := c.Stop(mode); err != nil {
		return err
	}
	return c.Start(ctx)
}

// Running reports whether the server process is alive. It turns false when
// the server was stopped, crashed or was killed from outside.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc != nil && c.proc.running()
}

// PID returns the postmaster's process id, or 0 when it is not running;
// fault tests use it to kill the server from outside.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || !c.proc.running() {
		return 0
	}
	return c.proc.pid
}

// Close stops the server with an immediate shutdown if it runs, kills any
// process left in its process group, and removes the cluster's directory.
// It is idempotent; calls after the first return nil.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if p := c.proc; p != nil {
		if p.running() {
			syscall.Kill(p.pid, syscall.SIGQUIT)
			p.wait(10 * time.Second)
		}
		// Also reaches backends orphaned by a postmaster that was killed
		// from outside.
		if err := p.killGroup(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
		c.proc = nil
	}
	if err := os.RemoveAll(c.root); err != nil {
		errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", c.root, err))
	}
	return errors.Join(errs...)
}

// LogFile returns the path of the server log, which tests print on failure.
func (c *Cluster) LogFile() string { return c.logPath }

// URL returns a connection URL for user and database over TCP.
func (c *Cluster) URL(user, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(user),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// SuperURL returns a connection URL for database as the superuser postgres.
func (c *Cluster) SuperURL(database string) string { return c.URL(superuser, database) }

// CreateDatabase creates database name.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	if err := c.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return nil
}

// Exec runs sql as the superuser in database on a new connection. Without
// args it uses the simple protocol, so sql may hold several statements,
// e.g. a schema file.
func (c *Cluster) Exec(ctx context.Context, database, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.SuperURL(database))
	if err != nil {
		return fmt.Errorf("pgtest: connect to %s: %w", database, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: exec: %w", err)
	}
	return nil
}

// logTail returns the last n lines of the server log.
func (c *Cluster) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
