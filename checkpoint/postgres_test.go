package checkpoint

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgoutbox/pgoutbox/internal/pgtest"
)

const testTable = "public.pgoutbox_checkpoint"

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// newDatabase creates a database for one subtest, so subtests share a cluster
// but not tables.
func newDatabase(t *testing.T, ctx context.Context, c *pgtest.Cluster) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := c.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	return name
}

// newRole creates a login role without CREATE on schema public in db.
func newRole(t *testing.T, ctx context.Context, c *pgtest.Cluster, db string) string {
	t.Helper()
	role := "app_" + db
	if err := c.Exec(ctx, db, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	// PostgreSQL 15 no longer grants this by default; older versions do.
	if err := c.Exec(ctx, db, "REVOKE CREATE ON SCHEMA public FROM PUBLIC"); err != nil {
		t.Fatal(err)
	}
	return role
}

func queryOne[T any](t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// pgCheckpoint has microsecond precision, which is what timestamptz keeps.
func pgCheckpoint(slot string, lsn pglogrepl.LSN) Checkpoint {
	return Checkpoint{
		LSN:       lsn,
		Slot:      slot,
		SystemID:  "7301234567890123456",
		Database:  "app",
		Timeline:  2,
		UpdatedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC),
	}
}

func mustSave(t *testing.T, ctx context.Context, s Store, cp Checkpoint) {
	t.Helper()
	if err := s.Save(ctx, cp); err != nil {
		t.Fatal(err)
	}
}

func mustLoad(t *testing.T, ctx context.Context, s Store, slot string) Checkpoint {
	t.Helper()
	cp, err := s.Load(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func TestPostgresStore(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})

	t.Run("InitCreatesTable", func(t *testing.T) {
		ctx := testContext(t)
		conn := connect(t, ctx, c.SuperURL(newDatabase(t, ctx, c)))
		s := NewPostgres(conn, testTable)
		if _, err := s.Load(ctx, "pgoutbox"); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), testTable) {
			t.Errorf("Load before Init: error = %v, want a missing-table error naming %s", err, testTable)
		}
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Init(ctx); err != nil {
			t.Fatalf("second Init: %v", err)
		}
		cols := queryOne[string](t, ctx, conn, `SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY attnum)
			FROM pg_attribute WHERE attrelid = 'public.pgoutbox_checkpoint'::regclass AND attnum > 0 AND NOT attisdropped`)
		want := "slot text not null, lsn pg_lsn not null, system_id text not null, database text not null, updated_at timestamp with time zone not null, timeline integer not null"
		if cols != want {
			t.Errorf("columns = %s, want %s", cols, want)
		}
		pk := queryOne[string](t, ctx, conn, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'public.pgoutbox_checkpoint'::regclass AND contype = 'p'`)
		if pk != "PRIMARY KEY (slot)" {
			t.Errorf("primary key = %s, want PRIMARY KEY (slot)", pk)
		}
		if _, err := s.Load(ctx, "pgoutbox"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Load of an empty table: error = %v, want ErrNotFound", err)
		}
	})

	t.Run("RoundTrip", func(t *testing.T) {
		ctx := testContext(t)
		conn := connect(t, ctx, c.SuperURL(newDatabase(t, ctx, c)))
		s := NewPostgres(conn, testTable)
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		want := pgCheckpoint("pgoutbox", 0x16B3748)
		mustSave(t, ctx, s, want)
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), want)
		if !queryOne[bool](t, ctx, conn, `SELECT lsn = '0/16B3748'::pg_lsn FROM public.pgoutbox_checkpoint WHERE slot = 'pgoutbox'`) {
			t.Error("stored lsn is not 0/16B3748")
		}

		want.LSN = pglogrepl.LSN(1<<64 - 1)
		mustSave(t, ctx, s, want)
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), want)
	})

	t.Run("UpsertReplaces", func(t *testing.T) {
		ctx := testContext(t)
		conn := connect(t, ctx, c.SuperURL(newDatabase(t, ctx, c)))
		s := NewPostgres(conn, testTable)
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		mustSave(t, ctx, s, pgCheckpoint("pgoutbox", 100))
		want := pgCheckpoint("pgoutbox", 0x2_0000_0000)
		want.SystemID = "7309999999999999999"
		want.Database = "other"
		want.UpdatedAt = want.UpdatedAt.Add(time.Hour)
		mustSave(t, ctx, s, want)
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), want)
		if n := queryOne[int64](t, ctx, conn, `SELECT count(*) FROM public.pgoutbox_checkpoint`); n != 1 {
			t.Errorf("table has %d rows, want 1", n)
		}
	})

	t.Run("SaveIsFenced", func(t *testing.T) {
		ctx := testContext(t)
		conn := connect(t, ctx, c.SuperURL(newDatabase(t, ctx, c)))
		s := NewPostgres(conn, testTable)
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		// A standby confirmed 200; the frozen instance wakes and saves 100.
		mustSave(t, ctx, s, pgCheckpoint("pgoutbox", 200))
		if err := s.Save(ctx, pgCheckpoint("pgoutbox", 100)); !errors.Is(err, ErrStale) {
			t.Fatalf("Save of an older position: error %v, want ErrStale", err)
		}
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), pgCheckpoint("pgoutbox", 200))
		mustSave(t, ctx, s, pgCheckpoint("pgoutbox", 200)) // the same position again is fine
		// Another cluster's position replaces it, older or not: the old one means
		// nothing there.
		other := pgCheckpoint("pgoutbox", 50)
		other.SystemID = "7309999999999999999"
		mustSave(t, ctx, s, other)
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), other)
		// Force writes an older position of the same origin.
		if err := s.Force(ctx, pgCheckpoint("pgoutbox", 10)); err != nil {
			t.Fatal(err)
		}
		if err := s.Force(ctx, pgCheckpoint("pgoutbox", 5)); err != nil {
			t.Fatal(err)
		}
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), pgCheckpoint("pgoutbox", 5))
	})

	t.Run("TableWithoutTimeline", func(t *testing.T) {
		// A table created by an older pgoutbox, owned by an administrator: the
		// least-privilege role cannot add the column and works without it.
		ctx := testContext(t)
		db := newDatabase(t, ctx, c)
		role := newRole(t, ctx, c, db)
		if err := c.Exec(ctx, db, `CREATE TABLE public.pgoutbox_checkpoint (slot text PRIMARY KEY, lsn pg_lsn NOT NULL,
			system_id text NOT NULL, database text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
			GRANT SELECT, INSERT, UPDATE ON public.pgoutbox_checkpoint TO `+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		s := NewPostgres(connect(t, ctx, c.URL(role, db)), testTable)
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		if s.Timelines() {
			t.Fatal("Timelines() with no timeline column")
		}
		cp := pgCheckpoint("pgoutbox", 300)
		mustSave(t, ctx, s, cp)
		cp.Timeline = 0
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), cp)
		// The owner adds it: the next Init uses it.
		if err := c.Exec(ctx, db, s.AlterSQL()); err != nil {
			t.Fatal(err)
		}
		s = NewPostgres(connect(t, ctx, c.URL(role, db)), testTable)
		if err := s.Init(ctx); err != nil || !s.Timelines() {
			t.Fatalf("after ALTER: Init %v, Timelines %v", err, s.Timelines())
		}
		cp = pgCheckpoint("pgoutbox", 400)
		mustSave(t, ctx, s, cp)
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), cp)
	})

	t.Run("SlotsIndependent", func(t *testing.T) {
		ctx := testContext(t)
		conn := connect(t, ctx, c.SuperURL(newDatabase(t, ctx, c)))
		s := NewPostgres(conn, testTable)
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		a, b := pgCheckpoint("a", 1), pgCheckpoint("b", 2)
		mustSave(t, ctx, s, a)
		mustSave(t, ctx, s, b)
		a.LSN = 3
		mustSave(t, ctx, s, a)
		assertSame(t, mustLoad(t, ctx, s, "a"), a)
		assertSame(t, mustLoad(t, ctx, s, "b"), b)
		if _, err := s.Load(ctx, "c"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Load of an unsaved slot: error = %v, want ErrNotFound", err)
		}
	})

	t.Run("SaveDetails", func(t *testing.T) {
		ctx := testContext(t)
		conn := connect(t, ctx, c.SuperURL(newDatabase(t, ctx, c)))
		s := NewPostgres(conn, testTable)
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		cp := pgCheckpoint("pgoutbox", 7)
		cp.UpdatedAt = time.Time{}
		before := time.Now().Add(-time.Millisecond)
		mustSave(t, ctx, s, cp)
		if got := mustLoad(t, ctx, s, "pgoutbox").UpdatedAt; got.Before(before) || got.After(time.Now()) {
			t.Errorf("zero UpdatedAt saved as %v, want the time of the Save", got)
		}

		cp.Slot = ""
		if err := s.Save(ctx, cp); err == nil {
			t.Error("Save without a slot succeeded")
		}

		// Raising synchronous_commit is local to Save's statement.
		if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
			t.Fatal(err)
		}
		mustSave(t, ctx, s, pgCheckpoint("pgoutbox", 8))
		if got := queryOne[string](t, ctx, conn, "SHOW synchronous_commit"); got != "off" {
			t.Errorf("after Save the session's synchronous_commit = %s, want off", got)
		}
		if got := s.Describe(); got != "postgres table "+testTable {
			t.Errorf("Describe() = %q", got)
		}
	})

	t.Run("LeastPrivilegePrecreated", func(t *testing.T) {
		ctx := testContext(t)
		db := newDatabase(t, ctx, c)
		role := newRole(t, ctx, c, db)
		if err := NewPostgres(connect(t, ctx, c.SuperURL(db)), testTable).Init(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, db, "GRANT SELECT, INSERT, UPDATE ON public.pgoutbox_checkpoint TO "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		conn := connect(t, ctx, c.URL(role, db))
		// The role really may not create tables, so Init must not try.
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS public.pgoutbox_checkpoint (slot text)"); err == nil {
			t.Fatal("test setup: the role may create tables")
		}
		s := NewPostgres(conn, testTable)
		if err := s.Init(ctx); err != nil {
			t.Fatalf("Init as a role without CREATE: %v", err)
		}
		want := pgCheckpoint("pgoutbox", 42)
		mustSave(t, ctx, s, want)
		mustSave(t, ctx, s, want) // the update path needs its own privilege
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), want)
	})

	t.Run("LeastPrivilegeNoTable", func(t *testing.T) {
		ctx := testContext(t)
		db := newDatabase(t, ctx, c)
		role := newRole(t, ctx, c, db)
		s := NewPostgres(connect(t, ctx, c.URL(role, db)), testTable)
		err := s.Init(ctx)
		if err == nil {
			t.Fatal("Init succeeded without the table and without CREATE privilege")
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("Init error %v does not wrap the permission error", err)
		}
		msg := err.Error()
		t.Logf("Init error: %s", msg)
		const marker = "as an administrator run: "
		i := strings.Index(msg, marker)
		if i < 0 || !strings.Contains(msg, role) || !strings.Contains(msg, testTable) {
			t.Fatalf("Init error = %q, want the table, the role and the SQL to run", msg)
		}
		// The SQL in the message is what an administrator runs; it must work.
		if err := c.Exec(ctx, db, msg[i+len(marker):]); err != nil {
			t.Fatalf("running the SQL from the error: %v", err)
		}
		if err := s.Init(ctx); err != nil {
			t.Fatalf("Init after an administrator ran the SQL: %v", err)
		}
		want := pgCheckpoint("pgoutbox", 42)
		mustSave(t, ctx, s, want)
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), want)
	})

	t.Run("MissingPrivileges", func(t *testing.T) {
		ctx := testContext(t)
		db := newDatabase(t, ctx, c)
		role := newRole(t, ctx, c, db)
		if err := NewPostgres(connect(t, ctx, c.SuperURL(db)), testTable).Init(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, db, "GRANT SELECT ON public.pgoutbox_checkpoint TO "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Fatal(err)
		}
		err := NewPostgres(connect(t, ctx, c.URL(role, db)), testTable).Init(ctx)
		want := `GRANT SELECT, INSERT, UPDATE ON "public"."pgoutbox_checkpoint" TO "` + role + `"`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Init error = %v, want one containing %s", err, want)
		}
	})

	t.Run("WrongColumns", func(t *testing.T) {
		ctx := testContext(t)
		db := newDatabase(t, ctx, c)
		if err := c.Exec(ctx, db, "CREATE TABLE public.pgoutbox_checkpoint (slot text PRIMARY KEY, position bigint)"); err != nil {
			t.Fatal(err)
		}
		err := NewPostgres(connect(t, ctx, c.SuperURL(db)), testTable).Init(ctx)
		if err == nil || !strings.Contains(err.Error(), "expected columns") {
			t.Errorf("Init error = %v, want one about the expected columns", err)
		}
	})

	t.Run("QuotedNames", func(t *testing.T) {
		ctx := testContext(t)
		db := newDatabase(t, ctx, c)
		if err := c.Exec(ctx, db, `CREATE SCHEMA "Odd Schema"`); err != nil {
			t.Fatal(err)
		}
		conn := connect(t, ctx, c.SuperURL(db))
		s := NewPostgres(conn, `Odd Schema.Check"point`)
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		want := pgCheckpoint("pgoutbox", 5)
		mustSave(t, ctx, s, want)
		assertSame(t, mustLoad(t, ctx, s, "pgoutbox"), want)
		if n := queryOne[int64](t, ctx, conn, `SELECT count(*) FROM "Odd Schema"."Check""point"`); n != 1 {
			t.Errorf("quoted table has %d rows, want 1", n)
		}
	})

	t.Run("UnqualifiedName", func(t *testing.T) {
		ctx := testContext(t)
		db := newDatabase(t, ctx, c)
		if err := c.Exec(ctx, db, `CREATE SCHEMA pgoutbox`); err != nil {
			t.Fatal(err)
		}
		conn := connect(t, ctx, c.SuperURL(db))
		if _, err := conn.Exec(ctx, "SET search_path = pgoutbox, public"); err != nil {
			t.Fatal(err)
		}
		s := NewPostgres(conn, "checkpoints")
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
		mustSave(t, ctx, s, pgCheckpoint("pgoutbox", 5))
		if n := queryOne[int64](t, ctx, conn, `SELECT count(*) FROM pgoutbox.checkpoints`); n != 1 {
			t.Errorf("pgoutbox.checkpoints has %d rows, want 1", n)
		}
	})

	t.Run("BadTableName", func(t *testing.T) {
		ctx := testContext(t)
		conn := connect(t, ctx, c.SuperURL("postgres"))
		for _, name := range []string{"", "a.b.c", "a..b", ".x", "x."} {
			s := NewPostgres(conn, name)
			for op, err := range map[string]error{
				"Init": s.Init(ctx),
				"Load": func() error { _, err := s.Load(ctx, "pgoutbox"); return err }(),
				"Save": s.Save(ctx, pgCheckpoint("pgoutbox", 1)),
			} {
				if err == nil || !strings.Contains(err.Error(), "want name or schema.name") {
					t.Errorf("%s with table %q: error = %v", op, name, err)
				}
			}
		}
	})
}

// TestPostgresSaveSurvivesCrash checks that Save is durable on a server whose
// synchronous_commit is off: the saved row must survive an immediate shutdown
// that comes before the WAL writer would flush an asynchronous commit.
func TestPostgresSaveSurvivesCrash(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{Settings: map[string]string{
		"synchronous_commit": "off",
		"wal_writer_delay":   "10s",
	}})
	ctx := testContext(t)
	conn := connect(t, ctx, c.SuperURL("postgres"))
	s := NewPostgres(conn, testTable)
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE control (i int)"); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 3; round++ {
		want := pgCheckpoint("pgoutbox", pglogrepl.LSN(round)<<24)
		mustSave(t, ctx, s, want)
		// An ordinary commit after the Save: with synchronous_commit off it is
		// usually lost, which shows that the crash is early enough to matter.
		if _, err := conn.Exec(ctx, "INSERT INTO control VALUES ($1)", round); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if err := c.Restart(ctx, "immediate"); err != nil {
			t.Fatal(err)
		}
		conn = connect(t, ctx, c.SuperURL("postgres"))
		s = NewPostgres(conn, testTable)
		got, err := s.Load(ctx, "pgoutbox")
		if err != nil {
			t.Fatalf("round %d: Load after an immediate shutdown: %v", round, err)
		}
		assertSame(t, got, want)
		lost := !queryOne[bool](t, ctx, conn, "SELECT EXISTS (SELECT FROM control WHERE i = $1)", round)
		t.Logf("round %d: checkpoint %s survived; the asynchronous control commit was lost: %v", round, got.LSN, lost)
	}
}
