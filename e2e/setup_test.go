package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// The setup tests make one mistake each in the PostgreSQL or Kafka setup and check
// that pgoutbox exits 1 with one line naming the problem and the fix, and that the
// password in --postgres-url appears nowhere in its output. pgtest's servers trust
// every local connection, so the password is never asked for: it is only there to be
// leaked.

// secret is the password the setup tests put in --postgres-url.
const secret = "Pw-4e2e-n0t-for-LOGS"

// withPassword returns the connection URL raw with the user's password set to pw.
func withPassword(t *testing.T, raw, pw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

// errorLine returns the single line pgoutbox printed on exit ("pgoutbox: ..."), and
// fails the test when there is not exactly one.
func errorLine(t *testing.T, out string) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "pgoutbox: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Errorf("want one error line on exit, got %d:\n%s", len(lines), tail(out, 30))
		if len(lines) == 0 {
			return ""
		}
	}
	return lines[len(lines)-1]
}

// mentions fails the test unless line contains every word, ignoring case.
func mentions(t *testing.T, line string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(strings.ToLower(line), strings.ToLower(w)) {
			t.Errorf("error does not mention %q: %s", w, line)
		}
	}
}

// noSecret fails the test if any of the secrets appears in out.
func noSecret(t *testing.T, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if i := strings.Index(out, s); i >= 0 {
			line := out[strings.LastIndex(out[:i], "\n")+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("the password %q appears in pgoutbox's output: %s", s, line)
		}
	}
}

// setupFails runs pgoutbox as the role in pgURL, with secret as its password and
// the extra flags, expects exit code 1 with one error line mentioning words, and
// returns that line.
func (e *env) setupFails(pgURL string, words []string, extra ...string) string {
	e.t.Helper()
	args := append([]string{"--postgres-url", withPassword(e.t, pgURL, secret)}, extra...)
	start := time.Now()
	code, out := e.run(60*time.Second, args...)
	if code != 1 {
		e.t.Errorf("exit code %d, want 1; output:\n%s", code, tail(out, 30))
	}
	if strings.Contains(out, `"streaming"`) {
		e.t.Errorf("pgoutbox streamed despite the setup mistake:\n%s", tail(out, 30))
	}
	noSecret(e.t, out, secret)
	line := errorLine(e.t, out)
	mentions(e.t, line, words...)
	e.t.Logf("exit %d after %s: %s", code, time.Since(start).Round(time.Millisecond), line)
	return line
}

// serverOwns gives path to the OS user PostgreSQL runs as: pgtest runs the server
// as "postgres" when the tests run as root.
func serverOwns(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// closedPort returns a port on 127.0.0.1 nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestSetupWALLevel: a server without wal_level = logical.
func TestSetupWALLevel(t *testing.T) {
	e := newEnv(t, envOptions{cluster: ownCluster(t, map[string]string{"wal_level": "replica"})})
	e.setupFails(e.url(), []string{"wal_level", "logical", "restart"})
}

// TestSetupConnect: wrong credentials, an unknown role or database, and a server
// that is not there.
func TestSetupConnect(t *testing.T) {
	t.Run("wrong password", func(t *testing.T) {
		c := ownCluster(t, nil)
		e := newEnv(t, envOptions{cluster: c})
		// Passwords for everyone but the superuser the test administers with.
		hba := "local all all trust\n" +
			"host all postgres 127.0.0.1/32 trust\n" +
			"host all all 127.0.0.1/32 scram-sha-256\n" +
			"local replication all trust\n" +
			"host replication all 127.0.0.1/32 scram-sha-256\n"
		path := filepath.Join(c.DataDir, "pg_hba.conf")
		if err := os.WriteFile(path, []byte(hba), 0o600); err != nil {
			t.Fatal(err)
		}
		serverOwns(t, path)
		const right = "Right-pw-for-e2e"
		e.exec(fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, role, right))
		e.exec(`SELECT pg_reload_conf()`)
		waitFor(t, 10*time.Second, "pg_hba.conf to ask for passwords", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, e.url())
			if err == nil {
				conn.Close(ctx)
			}
			return err != nil && strings.Contains(err.Error(), "password")
		})

		// The right password streams, and is not printed either.
		p := e.start("--postgres-url", withPassword(t, e.url(), right))
		p.waitLog(`"streaming"`, 30*time.Second)
		e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{}`})
		e.consumeN(1, 30*time.Second)
		e.stopClean(p)
		noSecret(t, p.out.String(), right)

		e.setupFails(e.url(), []string{"password", role, "--postgres-url"})
		// The same as keyword/value pairs.
		dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable", c.Port, role, secret, e.db)
		code, out := e.run(60*time.Second, "--postgres-url", dsn)
		if code != 1 {
			t.Errorf("DSN with a wrong password: exit code %d, want 1", code)
		}
		noSecret(t, out, secret)
		mentions(t, errorLine(t, out), "password", role)
	})
	t.Run("unknown role", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.setupFails(e.pg.URL("nobody_"+e.db, e.db), []string{"nobody_" + e.db, "does not exist", "--postgres-url"})
	})
	t.Run("unknown database", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.setupFails(e.pg.URL(role, "nope_"+e.db), []string{"nope_" + e.db, "does not exist", "--postgres-url"})
	})
	t.Run("closed port", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		port := closedPort(t)
		u := withPassword(t, e.url(), secret)
		u = strings.Replace(u, fmt.Sprintf(":%d/", e.pg.Port), fmt.Sprintf(":%d/", port), 1)
		e.setupFails(u, []string{fmt.Sprintf("127.0.0.1:%d", port), "--postgres-url"})
	})
}

// TestSetupTable: the outbox table or a mapped column is missing, or the payload
// column has a type pgoutbox cannot publish.
func TestSetupTable(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.setupFails(e.url(), []string{"public.nope", "does not exist", "--table"}, "--table", "public.nope")
	e.setupFails(e.url(), []string{`"nope"`, "public.outbox", "column"}, "--payload-column", "nope")

	e.exec(`CREATE TABLE public.intpayload (id uuid PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
		type text NOT NULL, payload integer)`)
	e.exec(`GRANT SELECT ON public.intpayload TO ` + role)
	e.setupFails(e.url(), []string{"payload", "integer", "jsonb"}, "--table", "public.intpayload", "--publication", "intpub")
}

// TestSetupRole: the role lacks REPLICATION, or SELECT on the table.
func TestSetupRole(t *testing.T) {
	e := newEnv(t, envOptions{})
	noRepl, noSelect := "norepl_"+e.db, "nosel_"+e.db
	e.exec(fmt.Sprintf(`CREATE ROLE %s LOGIN; GRANT SELECT ON public.outbox TO %s`, noRepl, noRepl))
	e.exec(fmt.Sprintf(`CREATE ROLE %s LOGIN REPLICATION`, noSelect))
	e.setupFails(e.pg.URL(noRepl, e.db), []string{noRepl, "REPLICATION", "ALTER ROLE"})
	e.setupFails(e.pg.URL(noSelect, e.db), []string{noSelect, "SELECT", "public.outbox", "GRANT"})
}

// TestSetupSlots: no replication slot or walsender is free, or the slot exists with
// another output plugin.
func TestSetupSlots(t *testing.T) {
	t.Run("max_replication_slots", func(t *testing.T) {
		e := newEnv(t, envOptions{cluster: ownCluster(t, map[string]string{"max_replication_slots": "1"})})
		e.exec(`SELECT pg_create_logical_replication_slot('other', 'pgoutput')`)
		e.setupFails(e.url(), []string{e.slot, "max_replication_slots"})
	})
	t.Run("max_wal_senders", func(t *testing.T) {
		e := newEnv(t, envOptions{cluster: ownCluster(t, map[string]string{"max_wal_senders": "1"})})
		// Another replication connection holds the only walsender.
		other, err := pgconn.Connect(context.Background(), e.pg.SuperURL(e.db)+"&replication=database")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { other.Close(context.Background()) })
		e.setupFails(e.url(), []string{"max_wal_senders"})
	})
	t.Run("other plugin", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.exec(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, e.slot)
		e.setupFails(e.url(), []string{e.slot, "test_decoding", "pgoutput", "--slot"})
	})
}

// TestSetupPublication: the publication exists but does not publish the table's
// inserts.
func TestSetupPublication(t *testing.T) {
	t.Run("deletes only", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.exec(`ALTER PUBLICATION pgoutbox SET (publish = 'delete')`)
		e.setupFails(e.url(), []string{"pgoutbox", "inserts", "ALTER PUBLICATION"})
	})
	t.Run("other table", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.exec(`CREATE TABLE public.other (id int PRIMARY KEY)`)
		e.exec(`DROP PUBLICATION pgoutbox; CREATE PUBLICATION pgoutbox FOR TABLE public.other`)
		e.setupFails(e.url(), []string{"pgoutbox", "public.outbox", "ALTER PUBLICATION"})
	})
}

// TestSetupBrokerUnreachable: no broker listens when pgoutbox starts. That is an
// outage, not a mistake: pgoutbox stays up, says Kafka is down, and publishes once a
// broker appears on the port.
func TestSetupBrokerUnreachable(t *testing.T) {
	e := newEnv(t, envOptions{})
	ports := kafkatest.Ports(e.kafka)
	e.kafka.Close()
	p := e.start("--postgres-url", withPassword(t, e.url(), secret))
	p.waitLog(`"streaming"`, 30*time.Second)
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "Created", Payload: `{"n":1}`},
		event{ID: uuidFor(2), Type: "order", AggID: "b", Kind: "Created", Payload: `{"n":2}`})
	p.waitLog("kafka brokers down", 60*time.Second)
	t.Logf("%s", firstLine(p.out.String(), "kafka brokers down"))
	time.Sleep(2 * time.Second) // still up a while later
	p.mustBeRunning("while Kafka was unreachable")
	k, err := kafkatest.Start(kafkatest.Options{Ports: ports})
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(k.Close)
	e.consumeN(2, 60*time.Second)
	e.insertTx(event{ID: uuidFor(3), Type: "order", AggID: "a", Kind: "Created", Payload: `{"n":3}`})
	e.consumeN(3, 30*time.Second)
	e.stopClean(p)
	noSecret(t, p.out.String(), secret)
	if n := e.pendingChanges(); n != 0 {
		t.Errorf("slot would re-send %d inserts after a clean stop", n)
	}
}
