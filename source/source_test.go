package source

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, c := range []struct {
		name   string
		in     string
		secret []string // must not survive
		keep   []string // must survive
		want   string   // exact result, when set
	}{
		{name: "url", in: "postgres://u:secret@h/db", secret: []string{"secret"},
			want: "postgres://u:xxxxx@h/db"},
		{name: "postgresql url with hosts and params", in: "postgresql://app:secret@h1:5432,h2:5433/db?sslmode=verify-full",
			secret: []string{"secret"}, keep: []string{"app", "h1:5432,h2:5433/db", "sslmode=verify-full"}},
		{name: "url with escaped characters", in: "postgres://u:s%40c%2Fret@h/db", secret: []string{"s%40c%2Fret", "%40c"}},
		{name: "url with colon in password", in: "postgres://u:sec:ret@h/db", secret: []string{"sec:ret", "ret@"}},
		{name: "url with empty user", in: "postgres://:secret@h/db", secret: []string{"secret"}},
		{name: "url without password", in: "postgres://u@h/db", want: "postgres://u@h/db"},
		{name: "query password", in: "postgres://u@h/db?password=secret", secret: []string{"secret"}, keep: []string{"postgres://u@h/db?password="}},
		{name: "query password not first", in: "postgres://u@h/db?sslmode=require&password=secret", secret: []string{"secret"},
			keep: []string{"sslmode=require"}},
		{name: "query sslpassword", in: "postgres://u@h/db?sslpassword=secret", secret: []string{"secret"}},
		{name: "dsn", in: "host=h user=u password=secret dbname=db", secret: []string{"secret"},
			want: "host=h user=u password=xxxxx dbname=db"},
		{name: "dsn quoted", in: "host=h password='a b c' dbname=db", secret: []string{"a b", "b c"},
			keep: []string{"host=h", "dbname=db"}},
		{name: "dsn quoted with escaped quote", in: `password='it\'s secret' dbname=db`, secret: []string{"secret", "it"},
			keep: []string{"dbname=db"}},
		{name: "dsn spaces around =", in: "host=h password = secret dbname=db", secret: []string{"secret"}, keep: []string{"dbname=db"}},
		{name: "dsn upper case", in: "HOST=h PASSWORD=secret", secret: []string{"secret"}},
		{name: "dsn sslpassword", in: "host=h sslpassword=secret", secret: []string{"secret"}},
		{name: "message quoting a url", in: `cannot parse "postgres://u:secret@h:x/db": invalid port ":x" after host`,
			secret: []string{"secret"}, keep: []string{"invalid port"}},
		{name: "message quoting a dsn", in: "failed to connect to `host=h user=u password=secret database=db`: dial error",
			secret: []string{"secret"}, keep: []string{"dial error"}},
		{name: "two urls", in: "from postgres://a:one@h1/db to postgres://b:two@h2/db", secret: []string{"one", "two"}},
		{name: "nothing to hide", in: "connection refused", want: "connection refused"},
	} {
		got := Redact(c.in)
		for _, s := range c.secret {
			if strings.Contains(got, s) {
				t.Errorf("%s: Redact(%q) = %q still contains %q", c.name, c.in, got, s)
			}
		}
		for _, s := range c.keep {
			if !strings.Contains(got, s) {
				t.Errorf("%s: Redact(%q) = %q lost %q", c.name, c.in, got, s)
			}
		}
		if c.want != "" && got != c.want {
			t.Errorf("%s: Redact(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

func TestSetupErrorRedactsCause(t *testing.T) {
	cause := errors.New(`connect "postgres://u:secret@h/db": refused`)
	err := setupErr(cause, "cannot use %s", "the server")
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("SetupError.Error() = %q shows the password", err)
	}
	if !strings.HasPrefix(err.Error(), "cannot use the server: ") {
		t.Errorf("SetupError.Error() = %q", err)
	}
	if !errors.Is(err, cause) {
		t.Error("SetupError does not unwrap to its cause")
	}
	if got := setupErr(nil, "plain %d", 1).Error(); got != "plain 1" {
		t.Errorf("SetupError without cause: %q", got)
	}

	ce := &ConnectError{Where: "h:5432", Err: errors.New("dial postgres://u:secret@h/db: refused")}
	if strings.Contains(ce.Error(), "secret") || !strings.Contains(ce.Error(), "h:5432") {
		t.Errorf("ConnectError.Error() = %q", ce)
	}
	if IsSetup(ce) {
		t.Error("a ConnectError is not a setup error: a retry may fix it")
	}
}

func TestIsSetup(t *testing.T) {
	se := setupErr(nil, "wal_level is replica")
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("connection reset"), false},
		{se, true},
		{fmt.Errorf("check server: %w", se), true},
		{fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", se)), true},
		{fmt.Errorf("not wrapped: %v", se), false},
	} {
		if got := IsSetup(c.err); got != c.want {
			t.Errorf("IsSetup(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestDescribe(t *testing.T) {
	for _, env := range []string{"PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGSSLMODE", "PGCONNECT_TIMEOUT"} {
		t.Setenv(env, "")
	}
	for _, c := range []struct {
		in, want string
	}{
		{"postgres://app:secret@db.example.com:5433/orders?sslmode=disable", "postgres://app@db.example.com:5433/orders"},
		{"postgres://app:secret@db.example.com/orders?sslmode=disable", "postgres://app@db.example.com:5432/orders"},
		{"host=db.example.com port=5434 user=app password=secret dbname=orders sslmode=disable", "postgres://app@db.example.com:5434/orders"},
	} {
		if got := Describe(c.in); got != c.want {
			t.Errorf("Describe(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// A string pgx cannot parse is redacted, not echoed.
	for _, in := range []string{"postgres://app:secret@h:notaport/db", "host=h port=abc password=secret"} {
		got := Describe(in)
		if strings.Contains(got, "secret") {
			t.Errorf("Describe(%q) = %q shows the password", in, got)
		}
		if got == "" {
			t.Errorf("Describe(%q) is empty", in)
		}
	}
}

func TestCreateSlotCommand(t *testing.T) {
	for _, c := range []struct {
		version int
		opts    SlotOptions
		want    string
	}{
		{100000, SlotOptions{}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput NOEXPORT_SNAPSHOT`},
		{140000, SlotOptions{}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput NOEXPORT_SNAPSHOT`},
		{140000, SlotOptions{ExportSnapshot: true}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput EXPORT_SNAPSHOT`},
		{149999, SlotOptions{}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput NOEXPORT_SNAPSHOT`},
		{150000, SlotOptions{}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput (SNAPSHOT 'nothing')`},
		{150000, SlotOptions{ExportSnapshot: true}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput (SNAPSHOT 'export')`},
		{160002, SlotOptions{ExportSnapshot: true}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput (SNAPSHOT 'export')`},
		{170000, SlotOptions{}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput (SNAPSHOT 'nothing')`},
		{170000, SlotOptions{Failover: true}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)`},
		{170000, SlotOptions{ExportSnapshot: true, Failover: true}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)`},
		{180000, SlotOptions{Failover: true}, `CREATE_REPLICATION_SLOT "pgoutbox" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)`},
	} {
		got, err := CreateSlotCommand("pgoutbox", c.version, c.opts)
		if err != nil {
			t.Errorf("CreateSlotCommand(%d, %+v): %v", c.version, c.opts, err)
			continue
		}
		if got != c.want {
			t.Errorf("CreateSlotCommand(%d, %+v) = %s, want %s", c.version, c.opts, got, c.want)
		}
	}
}

func TestCreateSlotCommandFailoverNeeds17(t *testing.T) {
	for _, version := range []int{100000, 140000, 150000, 160004, 169999} {
		for _, export := range []bool{false, true} {
			cmd, err := CreateSlotCommand("pgoutbox", version, SlotOptions{Failover: true, ExportSnapshot: export})
			if err == nil {
				t.Errorf("version %d: failover slot command %q, want an error", version, cmd)
				continue
			}
			var se *SetupError
			if !errors.As(err, &se) {
				t.Errorf("version %d: error %v (%T) is not a *SetupError", version, err, err)
			}
			if !strings.Contains(err.Error(), "needs PostgreSQL 17") || !strings.Contains(err.Error(), "--slot-failover") {
				t.Errorf("version %d: error %q does not say --slot-failover needs PostgreSQL 17", version, err)
			}
			if cmd != "" {
				t.Errorf("version %d: command %q returned along with an error", version, cmd)
			}
		}
	}
}

// TestCreateSlotCommandFailoverErrorNamesServerVersion: since PostgreSQL 10,
// server_version_num is major*10000 + minor, so 160004 is 16.4, not 16.0.
func TestCreateSlotCommandFailoverErrorNamesServerVersion(t *testing.T) {
	for version, want := range map[int]string{140000: "14.0", 150012: "15.12", 160004: "16.4"} {
		_, err := CreateSlotCommand("pgoutbox", version, SlotOptions{Failover: true})
		if err == nil || !strings.Contains(err.Error(), "(server is "+want+")") {
			t.Errorf("version %d: error %v, want it to say (server is %s)", version, err, want)
		}
	}
}

func TestCreateSlotCommandQuotesName(t *testing.T) {
	got, err := CreateSlotCommand(`odd"name`, 150000, SlotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, `CREATE_REPLICATION_SLOT "odd""name" LOGICAL`) {
		t.Errorf("slot name not quoted: %s", got)
	}
}

// wantSetup fails unless err is a *SetupError whose message contains every want.
func wantSetup(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want a setup error", what)
		return
	}
	if !IsSetup(err) {
		t.Errorf("%s: %v (%T) is not a setup error", what, err, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not contain %q", what, err, w)
		}
	}
}

func TestCheckServer(t *testing.T) {
	for _, s := range []Server{
		{Version: 100000, WALLevel: "logical"},
		{Version: 150004, WALLevel: "logical"},
		{Version: 170002, WALLevel: "logical"},
	} {
		if err := CheckServer(s); err != nil {
			t.Errorf("CheckServer(%+v) = %v, want nil", s, err)
		}
	}
	wantSetup(t, "9.6", CheckServer(Server{Version: 90624, WALLevel: "logical"}), "PostgreSQL 9.6 is too old", "10 or newer")
	wantSetup(t, "replica", CheckServer(Server{Version: 150004, WALLevel: "replica"}), `wal_level is "replica"`, "wal_level = logical", "restart")
	wantSetup(t, "minimal", CheckServer(Server{Version: 150004, WALLevel: "minimal"}), `"minimal"`)
}

func outboxColumns() []Column {
	return []Column{
		{Name: "id", Type: "uuid", BaseType: "uuid"},
		{Name: "aggregatetype", Type: "character varying(255)", BaseType: "character varying"},
		{Name: "aggregateid", Type: "text", BaseType: "text"},
		{Name: "type", Type: "text", BaseType: "text"},
		{Name: "payload", Type: "jsonb", BaseType: "jsonb"},
	}
}

func TestCheckColumnsMissing(t *testing.T) {
	mapped := []string{"id", "aggregateid", "payload", "aggregatetype", "tenant"}
	err := CheckColumns("public.outbox", outboxColumns(), mapped, "payload")
	wantSetup(t, "missing column", err, `"tenant"`, "public.outbox", "id, aggregatetype, aggregateid, type, payload")

	if err := CheckColumns("public.outbox", outboxColumns(), mapped[:4], "payload"); err != nil {
		t.Errorf("all columns present: %v", err)
	}
}

func TestCheckColumnsPayloadType(t *testing.T) {
	for _, c := range []struct {
		typ, base string
		ok        bool
	}{
		{"jsonb", "jsonb", true},
		{"json", "json", true},
		{"text", "text", true},
		{"character varying(4000)", "character varying", true},
		{"character varying", "character varying", true},
		{"character(10)", "character", true},
		{"bytea", "bytea", true},
		{"event_payload", "jsonb", true},                         // a domain over jsonb
		{"character varying(10)", "character varying(10)", true}, // a base type with a typmod
		{"integer", "integer", false},
		{"bigint", "bigint", false},
		{"text[]", "text[]", false},
		{"jsonb[]", "jsonb[]", false},
		{"xml", "xml", false},
		{"positive_int", "integer", false}, // a domain over integer
		{"mood", "mood", false},            // an enum
	} {
		cols := outboxColumns()
		cols[4].Type, cols[4].BaseType = c.typ, c.base
		err := CheckColumns("public.outbox", cols, []string{"id", "aggregateid", "payload"}, "payload")
		if c.ok {
			if err != nil {
				t.Errorf("payload %s (base %s): %v, want accepted", c.typ, c.base, err)
			}
			continue
		}
		wantSetup(t, "payload "+c.typ, err, `payload column "payload"`, "type "+c.typ, "jsonb, json, text, varchar or bytea")
	}
}

func TestCheckPublication(t *testing.T) {
	ok := Publication{Name: "pgoutbox", Insert: true, HasTable: true, TableCount: 1}
	if err := CheckPublication(ok, "public.outbox"); err != nil {
		t.Errorf("CheckPublication(%+v) = %v", ok, err)
	}
	all := Publication{Name: "everything", AllTables: true, Insert: true, Update: true, Delete: true, HasTable: true, TableCount: 12}
	if err := CheckPublication(all, "public.outbox"); err != nil {
		t.Errorf("CheckPublication(%+v) = %v", all, err)
	}
	noTable := ok
	noTable.HasTable = false
	wantSetup(t, "table missing", CheckPublication(noTable, "public.outbox"),
		`publication "pgoutbox" does not include table public.outbox`, "ALTER PUBLICATION pgoutbox ADD TABLE public.outbox")
	noInsert := ok
	noInsert.Insert = false
	wantSetup(t, "no inserts", CheckPublication(noInsert, "public.outbox"), "does not publish inserts", "publish = 'insert'")
}

func TestCheckSlot(t *testing.T) {
	good := Slot{Name: "pgoutbox", Plugin: "pgoutput", Type: "logical", Database: "orders"}
	if err := CheckSlot(good, "orders"); err != nil {
		t.Errorf("CheckSlot(%+v) = %v", good, err)
	}
	active := good
	active.Active, active.ActivePID = true, 4242
	if err := CheckSlot(active, "orders"); err != nil {
		t.Errorf("an active slot is not a setup problem: %v", err)
	}

	physical := Slot{Name: "pgoutbox", Type: "physical"}
	wantSetup(t, "physical", CheckSlot(physical, "orders"), "is a physical slot", "--slot")
	wal2json := good
	wal2json.Plugin = "wal2json"
	wantSetup(t, "wal2json", CheckSlot(wal2json, "orders"), `uses plugin "wal2json"`, "pgoutput")
	otherDB := good
	otherDB.Database = "billing"
	wantSetup(t, "other database", CheckSlot(otherDB, "orders"), `belongs to database "billing", not "orders"`)
}

// TestAlterSlotFailoverCommand: an existing slot becomes a failover slot on
// PostgreSQL 17 with ALTER_REPLICATION_SLOT; the name is quoted.
func TestAlterSlotFailoverCommand(t *testing.T) {
	if got, want := AlterSlotFailoverCommand("pgoutbox"), `ALTER_REPLICATION_SLOT "pgoutbox" (FAILOVER true)`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
