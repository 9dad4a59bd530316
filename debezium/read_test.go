package debezium

import (
	"net/url"
	"strings"
	"testing"
)

// TestParseProperties: the corners of java.util.Properties.load's format that a
// connector's .properties file may use. The expected values are what Properties.load
// reads (its Javadoc: separators, comments, continuation lines, escapes).
func TestParseProperties(t *testing.T) {
	for _, c := range []struct {
		name, text, key, want string
	}{
		{"equals", "a=b", "a", "b"},
		{"colon", "a:b", "a", "b"},
		{"whitespace separator", "a b", "a", "b"},
		{"spaces around the separator", "a \t = \t b", "a", "b"},
		{"trailing whitespace is kept", "a=b  ", "a", "b  "},
		{"empty value", "a=", "a", ""},
		{"key alone", "a", "a", ""},
		{"second separator is part of the value", "a=b=c:d", "a", "b=c:d"},
		{"escaped separator in the key", `a\=b\:c\ d=e`, "a=b:c d", "e"},
		{"escape in the key", `a\tb=1`, "a\tb", "1"},
		{"escaped backslash in the key is not unescaped twice", `a\\u0041=1`, `a\u0041`, "1"},
		{"unicode escape", `a=\u00e9t\u00E9`, "a", "été"},
		{"escapes in the value", `a=x\ty\nz\\w\q`, "a", "x\ty\nz\\wq"},
		{"windows path", `a=C:\\temp\\x`, "a", `C:\temp\x`},
		{"continued line, leading space of the next dropped", "a=one\\\n    two", "a", "onetwo"},
		{"even backslashes do not continue", "a=x\\\\\nb=y", "a", `x\`},
		{"a continued line that looks like a comment", "a=x\\\n#y", "a", "x#y"},
		{"indented comment", "  # a=wrong\na=right", "a", "right"},
		{"bang comment", "! a=wrong\na=right", "a", "right"},
		{"CRLF", "a=b\r\nc=d\r\n", "a", "b"},
		{"last one wins", "a=1\na=2", "a", "2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseProperties([]byte(c.text))
			if err != nil {
				t.Fatalf("parse %q: %v", c.text, err)
			}
			got, ok := o.Values[c.key]
			if !ok || got != c.want {
				t.Fatalf("parse %q: %q = %q (present %v), want %q; all: %q", c.text, c.key, got, ok, c.want, o.Values)
			}
		})
	}
}

func TestParsePropertiesMalformedEscape(t *testing.T) {
	for _, text := range []string{"a=\\u12", "a=\\u12zz", "x=1\n\\u00g1=2"} {
		_, err := parseProperties([]byte(text))
		if err == nil || !strings.Contains(err.Error(), `\uxxxx`) {
			t.Errorf("parse %q: %v, want a malformed \\uxxxx error", text, err)
		}
	}
	_, err := parseProperties([]byte("a=1\nb=\\u00"))
	if err == nil || !strings.HasPrefix(err.Error(), "line 2:") {
		t.Errorf("error %v, want it to name line 2", err)
	}
}

// TestParseChoosesTheFormat: a JSON object (a REST body or a bare config) or
// properties, whatever the file is called.
func TestParseChoosesTheFormat(t *testing.T) {
	for _, text := range []string{`{"name":"n","config":{"slot.name":"s"}}`, ` {"slot.name":"s","name":"n"}`, "name=n\nslot.name=s\n"} {
		o, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("Parse %q: %v", text, err)
		}
		if o.Values["slot.name"] != "s" || o.Name != "n" {
			t.Errorf("Parse %q: name %q, values %q", text, o.Name, o.Values)
		}
	}
}

// minimal is a connector configuration pgoutbox accepts, as properties; extra lines
// are appended (a later line wins).
func minimal(extra string) string {
	return `connector.class=io.debezium.connector.postgresql.PostgresConnector
plugin.name=pgoutput
database.hostname=db.example
database.user=app
database.dbname=orders
table.include.list=public.outbox
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
transforms=o
transforms.o.type=io.debezium.transforms.outbox.EventRouter
` + extra
}

func flagValue(r *Result, name string) (Flag, bool) {
	for _, f := range r.Flags {
		if f.Name == name {
			return f, true
		}
	}
	return Flag{}, false
}

// TestDatabaseURL: the connection options make one URL; a password with URL syntax in
// it survives the round trip, and is redacted in what is shown.
func TestDatabaseURL(t *testing.T) {
	r := mustConvert(t, minimal("database.port=6432\ndatabase.password=p@ss/w:rd?#%\ndatabase.sslmode=verify-full\ndatabase.sslrootcert=/etc/ca.pem\n"))
	f, ok := flagValue(r, "postgres-url")
	if !ok || f.Problem != "" {
		t.Fatalf("postgres-url %+v", f)
	}
	want := "postgres://app:xxxxx@db.example:6432/orders?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"
	if f.Shown != want {
		t.Errorf("shown %s, want %s", f.Shown, want)
	}
	if strings.Contains(f.Shown, "p@ss") {
		t.Errorf("shown URL carries the password: %s", f.Shown)
	}
	u, err := url.Parse(f.Value)
	if err != nil {
		t.Fatalf("value %s: %v", f.Value, err)
	}
	if pw, _ := u.User.Password(); pw != "p@ss/w:rd?#%" || u.Host != "db.example:6432" || u.Path != "/orders" {
		t.Errorf("value %s: password %q, host %q, path %q", f.Value, pw, u.Host, u.Path)
	}

	r = mustConvert(t, minimal(""))
	if f, _ := flagValue(r, "postgres-url"); f.Value != "postgres://app@db.example:5432/orders" {
		t.Errorf("without port and password: %s, want Debezium's default port 5432", f.Value)
	}
}

// TestTableIncludeList: entries naming one table become --table; a pattern is an
// error naming the entry, never a silently different table set.
func TestTableIncludeList(t *testing.T) {
	for _, c := range []struct{ entry, want string }{
		{"public.outbox", "public.outbox"},
		{`inventory\.outboxevent`, "inventory.outboxevent"},
		{"outbox", "public.outbox"},
		{"s_1.t$2", "s_1.t$2"},
	} {
		got, err := literalTable(c.entry)
		if err != nil || got != c.want {
			t.Errorf("literalTable(%q) = %q, %v; want %q", c.entry, got, err, c.want)
		}
	}
	for _, entry := range []string{"public.outbox.*", "public\\..*", "(a|b)", "public.out[bx]", ""} {
		if got, err := literalTable(entry); err == nil {
			t.Errorf("literalTable(%q) = %q, want a pattern refused", entry, got)
		}
	}
}

// TestShellQuote: printed flags paste into a POSIX shell as they are.
func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain-value_1.2/x:y=z@h,+%": "plain-value_1.2/x:y=z@h,+%",
		"":                           "''",
		"two words":                  "'two words'",
		"it's":                       `'it'\''s'`,
		"${routedByValue}.events":    "'${routedByValue}.events'",
		"a;rm -rf /":                 "'a;rm -rf /'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
