package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// liveProcessesUsing lists processes (zombies excluded: they have no command
// line) whose command line mentions dir.
func liveProcessesUsing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmdline), dir) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

func assertGone(t *testing.T, c *Cluster) {
	t.Helper()
	root := filepath.Dir(c.DataDir)
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cluster dir %s still exists after Close (stat: %v)", root, err)
	}
	if procs := liveProcessesUsing(t, c.DataDir); len(procs) > 0 {
		t.Errorf("processes still running for %s after Close: %v", c.DataDir, procs)
	}
}

func TestDurableClusterSurvivesImmediateStop(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := New(t, Options{Durable: true})

	if !c.Running() || c.PID() == 0 {
		t.Fatalf("Running() = %v, PID() = %d after New", c.Running(), c.PID())
	}
	conn := connect(t, ctx, c.SuperURL("postgres"))
	if got := queryString(t, ctx, conn, "SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level = %q, want logical", got)
	}
	if got := queryString(t, ctx, conn, "SHOW fsync"); got != "on" {
		t.Fatalf("durable cluster has fsync = %q, want on", got)
	}
	for _, sql := range []string{
		"CREATE TABLE t (id int PRIMARY KEY)",
		"INSERT INTO t SELECT generate_series(1, 3)",
		"CREATE PUBLICATION p FOR TABLE t",
		"SELECT pg_create_logical_replication_slot('s1', 'pgoutput')",
		"INSERT INTO t VALUES (4)",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	conn.Close(ctx)

	port := c.Port
	if err := c.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if c.Running() || c.PID() != 0 {
		t.Fatalf("Running() = %v, PID() = %d after Stop", c.Running(), c.PID())
	}
	if _, err := pgx.Connect(ctx, c.SuperURL("postgres")); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := c.Stop("immediate"); err == nil {
		t.Fatal("Stop of a stopped server returned nil")
	}

	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port != port {
		t.Fatalf("port changed across restart: %d -> %d", port, c.Port)
	}
	conn = connect(t, ctx, c.SuperURL("postgres"))
	if got := queryString(t, ctx, conn, "SELECT count(*)::text FROM t"); got != "4" {
		t.Fatalf("rows after immediate stop = %s, want 4", got)
	}
	if got := queryString(t, ctx, conn, "SELECT plugin FROM pg_replication_slots WHERE slot_name = 's1'"); got != "pgoutput" {
		t.Fatalf("slot plugin = %q, want pgoutput", got)
	}
	// The slot decodes the row inserted after it was created: begin,
	// relation, insert and commit messages.
	if got := queryString(t, ctx, conn,
		"SELECT count(*)::text FROM pg_logical_slot_peek_binary_changes('s1', NULL, NULL, 'proto_version', '1', 'publication_names', 'p')"); got != "4" {
		t.Fatalf("pgoutput messages decoded from the slot = %s, want 4", got)
	}
	conn.Close(ctx)

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Start(ctx); err == nil {
		t.Fatal("Start after Close returned nil")
	}
	assertGone(t, c)
}

func TestSettingsAndReplicationRole(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := New(t, Options{Settings: map[string]string{
		"wal_sender_timeout": "5s",
		"fsync":              "on", // Settings win over pgtest's own.
		"application_name":   "it's quoted",
	}})

	conn := connect(t, ctx, c.SuperURL("postgres"))
	for setting, want := range map[string]string{
		"wal_sender_timeout":    "5s",
		"fsync":                 "on",
		"full_page_writes":      "off",
		"synchronous_commit":    "off",
		"max_replication_slots": "32",
		"max_wal_senders":       "32",
		"listen_addresses":      "127.0.0.1",
		"port":                  strconv.Itoa(c.Port),
		"server_encoding":       "UTF8",
		"lc_collate":            "C",
	} {
		if got := queryString(t, ctx, conn, "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := queryString(t, ctx, conn, "SELECT setting FROM pg_settings WHERE name = 'application_name' AND source = 'configuration file'"); got != "it's quoted" {
		t.Errorf("application_name from the config file = %q", got)
	}
	if major := queryString(t, ctx, conn, "SELECT current_setting('server_version_num')"); major < "150000" {
		t.Errorf("server_version_num = %s, want PostgreSQL 15 or later", major)
	}

	// A database whose name needs quoting in SQL and escaping in a URL.
	const db = "Odd db/name"
	if err := c.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, db, "CREATE ROLE outbox LOGIN REPLICATION"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, db, "CREATE TABLE t (id int); CREATE INDEX ON t (id)"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, db, "INSERT INTO t VALUES ($1), ($2)", 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, db, "SELECT * FROM missing"); err == nil {
		t.Error("Exec of a bad query returned nil")
	}
	dbConn := connect(t, ctx, c.URL("outbox", db))
	if got := queryString(t, ctx, dbConn, "SELECT current_database() || ' ' || current_user"); got != db+" outbox" {
		t.Errorf("connected as %q", got)
	}

	// The least-privilege role can open a logical replication connection.
	rconn, err := pgconn.Connect(ctx, c.URL("outbox", db)+"&replication=database")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	defer rconn.Close(context.Background())
	res, err := rconn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		t.Fatalf("IDENTIFY_SYSTEM: %v", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || string(res[0].Rows[0][3]) != db {
		t.Fatalf("IDENTIFY_SYSTEM returned %+v, want one row naming database %q", res, db)
	}
}

func TestRestartFast(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := New(t, Options{})
	if err := c.Exec(ctx, "postgres", "CREATE TABLE t AS SELECT 42 AS v"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, ctx, c.SuperURL("postgres"))
	if got := queryString(t, ctx, conn, "SELECT v::text FROM t"); got != "42" {
		t.Fatalf("v = %s after restart, want 42", got)
	}
	if err := c.Stop("sideways"); err == nil {
		t.Fatal("Stop with an unknown mode returned nil")
	}
	if !c.Running() {
		t.Fatal("an unknown stop mode stopped the server")
	}
}

func TestCloseAfterServerKilledFromOutside(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := New(t, Options{})
	conn := connect(t, ctx, c.SuperURL("postgres")) // a backend to orphan
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(c.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Running() {
		if time.Now().After(deadline) {
			t.Fatal("Running() still true 10s after SIGKILL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, c)
}

func TestStartFailureLeavesNothing(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	tmp := t.TempDir()
	// The server user must reach the cluster's directory below tmp.
	for _, dir := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TMPDIR", tmp)
	ctx := testContext(t)

	_, err := Start(ctx, Options{Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil || !strings.Contains(err.Error(), "shared_buffers") {
		t.Fatalf("Start with a bad setting: err = %v, want one quoting the server log about shared_buffers", err)
	}
	for _, opts := range []Options{
		{Settings: map[string]string{"port": "5432"}},
		{Settings: map[string]string{"bad name": "1"}},
	} {
		if c, err := Start(ctx, opts); err == nil {
			c.Close()
			t.Errorf("Start(%v) returned nil", opts.Settings)
		}
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("failed starts left %d entries in TMPDIR, first %s", len(left), left[0].Name())
	}
}

func TestFixedPort(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c := New(t, Options{Port: port})
	if c.Port != port {
		t.Fatalf("Port = %d, want %d", c.Port, port)
	}
	want := "postgres://app@127.0.0.1:" + strconv.Itoa(port) + "/db?sslmode=disable"
	if got := c.URL("app", "db"); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
	// A second cluster on a taken port fails instead of moving elsewhere.
	c2, err := Start(testContext(t), Options{Port: port})
	if err == nil {
		c2.Close()
		t.Fatal("second cluster on the same port started")
	}
	if !strings.Contains(err.Error(), "could not bind") {
		t.Fatalf("second cluster on the same port: err = %v, want the server's bind error", err)
	}
}

// TestServerDiesWithTestProcess checks that a test binary killed without
// cleaning up (e.g. by go test -timeout) does not leave its server running:
// it runs this test binary as a helper that starts a cluster, kills the
// helper with SIGKILL and waits for the server to go.
func TestServerDiesWithTestProcess(t *testing.T) {
	if os.Getenv("PGTEST_HELPER") == "1" {
		c, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(c.DataDir)
		select {} // until killed
	}
	if err := Available(); err != nil {
		t.Skip(err)
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithTestProcess$")
	cmd.Env = append(os.Environ(), "PGTEST_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read helper output: %v", err)
	}
	dataDir := strings.TrimSpace(line)
	if !filepath.IsAbs(dataDir) {
		t.Fatalf("helper: %s", line)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(dataDir)) }) // the helper could not
	if procs := liveProcessesUsing(t, dataDir); len(procs) == 0 {
		t.Fatalf("no server running for %s while the helper lives", dataDir)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		procs := liveProcessesUsing(t, dataDir)
		if len(procs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server outlived its test process by 30s: %v", procs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClustersHaveDistinctSystemIDs guards against speeding clusters up by
// copying one initdb'd template: pgoutbox's checkpoint tells clusters apart
// by system identifier.
func TestClustersHaveDistinctSystemIDs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var ids []string
	for range 2 {
		c := New(t, Options{})
		conn := connect(t, ctx, c.SuperURL("postgres"))
		ids = append(ids, queryString(t, ctx, conn, "SELECT system_identifier::text FROM pg_control_system()"))
	}
	if ids[0] == ids[1] {
		t.Fatalf("two clusters share system identifier %s", ids[0])
	}
}

// TestSynchronousStandby: a standby made by StartStandby streams from its primary
// as the synchronous standby synchronous_standby_names names, a commit waits for it
// while it is stopped, and Promote makes it a primary of its own.
func TestSynchronousStandby(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	p := New(t, Options{Settings: map[string]string{"synchronous_standby_names": "s1", "synchronous_commit": "on"}})
	s := NewStandby(t, p, StandbyOptions{Name: "s1"})
	if err := p.WaitStreaming(ctx, "s1", "sync"); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "postgres", "CREATE TABLE t (v int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	// A synchronous commit returned: the standby has the row (remote_apply is
	// not asked for, so wait for the replay).
	sconn := connect(t, ctx, s.SuperURL("postgres"))
	deadline := time.Now().Add(30 * time.Second)
	// Until the replay reaches the CREATE TABLE the query fails with "relation
	// does not exist"; that is lag, not a failure.
	for {
		var n string
		err := sconn.QueryRow(ctx, "SELECT count(*)::text FROM t").Scan(&n)
		if err == nil && n == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby never showed the committed row (last: %q, %v)", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := queryString(t, ctx, sconn, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("standby pg_is_in_recovery() = %s", got)
	}
	sconn.Close(ctx)

	if err := s.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pconn := connect(t, ctx, p.SuperURL("postgres"))
	if _, err := pconn.Exec(wctx, "INSERT INTO t VALUES (2)"); err == nil {
		t.Fatal("a synchronous commit returned with its standby stopped")
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, "postgres", "INSERT INTO t VALUES (3)"); err != nil {
		t.Fatalf("write on the promoted standby: %v", err)
	}
}
