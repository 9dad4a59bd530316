package outbox

import (
	"reflect"
	"strings"
	"testing"
)

func TestConfigTopic(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"default", DefaultConfig(), "outbox.event.{aggregatetype}"},
		{"renamed aggregate type column", Config{AggregateTypeColumn: "kind"}, "outbox.event.{kind}"},
		{"template wins", Config{AggregateTypeColumn: "kind", TopicTemplate: "{tenant}.events"}, "{tenant}.events"},
	} {
		if got := c.cfg.Topic(); got != c.want {
			t.Errorf("%s: Topic() = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSplitTable(t *testing.T) {
	for _, c := range []struct {
		in           string
		schema, name string
		ok           bool
	}{
		{"public.outbox", "public", "outbox", true},
		{"outbox", "public", "outbox", true},
		{"app.events", "app", "events", true},
		{"", "", "", false},
		{".", "", "", false},
		{"app.", "", "", false},
		{".outbox", "", "", false},
		{"a.b.c", "", "", false},
	} {
		schema, name, err := SplitTable(c.in)
		if (err == nil) != c.ok {
			t.Errorf("SplitTable(%q) error = %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), "want schema.table") {
				t.Errorf("SplitTable(%q) error %q does not say what is wanted", c.in, err)
			}
			continue
		}
		if schema != c.schema || name != c.name {
			t.Errorf("SplitTable(%q) = %q, %q, want %q, %q", c.in, schema, name, c.schema, c.name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	for _, c := range []struct {
		name    string
		cfg     Config
		wantErr string // "" means valid
	}{
		{"default", DefaultConfig(), ""},
		{"unqualified table", with(func(c *Config) { c.Tables = []string{"outbox"} }), ""},
		{"literal topic", with(func(c *Config) { c.TopicTemplate = "events" }), ""},
		{"literal topic without aggregate type column", with(func(c *Config) { c.TopicTemplate = "events"; c.AggregateTypeColumn = "" }), ""},
		{"template with two columns", with(func(c *Config) { c.TopicTemplate = "{tenant}.outbox.{aggregatetype}" }), ""},
		{"headers", with(func(c *Config) {
			c.Headers = []HeaderColumn{{Column: "type", Name: "eventType"}, {Column: "tenant", Name: "tenant"}}
		}), ""},

		{"bad table", with(func(c *Config) { c.Tables = []string{"a.b.c"} }), "want schema.table"},
		{"empty table", with(func(c *Config) { c.Tables = []string{""} }), "want schema.table"},
		{"no table", with(func(c *Config) { c.Tables = nil }), "no outbox table"},
		{"table twice", with(func(c *Config) { c.Tables = []string{"outbox", "public.outbox"} }), "configured twice"},
		{"empty id column", with(func(c *Config) { c.IDColumn = "" }), "id column must not be empty"},
		{"empty key column", with(func(c *Config) { c.KeyColumn = "" }), "key column must not be empty"},
		{"empty payload column", with(func(c *Config) { c.PayloadColumn = "" }), "payload column must not be empty"},
		{"no template and no aggregate type", with(func(c *Config) { c.AggregateTypeColumn = "" }), "aggregate type column is needed"},
		{"unmatched open brace", with(func(c *Config) { c.TopicTemplate = "events.{type" }), "unmatched '{'"},
		{"unmatched close brace", with(func(c *Config) { c.TopicTemplate = "events.type}" }), "unmatched '}'"},
		{"empty placeholder", with(func(c *Config) { c.TopicTemplate = "events.{}" }), "bad placeholder"},
		{"illegal literal topic", with(func(c *Config) { c.TopicTemplate = "my events" }), "topic template"},
		{"literal topic too long", with(func(c *Config) { c.TopicTemplate = strings.Repeat("a", 250) }), "249"},
		{"literal topic dot", with(func(c *Config) { c.TopicTemplate = "." }), "not allowed"},
		{"header without column", with(func(c *Config) { c.Headers = []HeaderColumn{{Name: "x"}} }), "must not be empty"},
		{"header without name", with(func(c *Config) { c.Headers = []HeaderColumn{{Column: "x"}} }), "must not be empty"},
		{"header twice", with(func(c *Config) {
			c.Headers = []HeaderColumn{{Column: "a", Name: "h"}, {Column: "b", Name: "h"}}
		}), `header "h" is set twice`},
		{"header named id clashes with the event id header", with(func(c *Config) {
			c.Headers = []HeaderColumn{{Column: "other_id", Name: "id"}}
		}), `header "id" is set twice`},
	} {
		err := c.cfg.Validate()
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", c.name, err)
		case c.wantErr != "" && err == nil:
			t.Errorf("%s: Validate() = nil, want error containing %q", c.name, c.wantErr)
		case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
			t.Errorf("%s: Validate() = %q, want it to contain %q", c.name, err, c.wantErr)
		}
	}
}

// TestValidateRejectsIllegalTemplateLiteral: a template whose literal text can never be
// part of a legal topic ("orders/{type}") makes every row fail at run time. Validate
// checks literal-only templates; the literal parts of a template with placeholders can
// be checked just as well, without a database.
func TestValidateRejectsIllegalTemplateLiteral(t *testing.T) {
	for _, tpl := range []string{"orders/{aggregatetype}", "outbox event.{aggregatetype}", "{aggregatetype}:v1"} {
		c := DefaultConfig()
		c.TopicTemplate = tpl
		if err := c.Validate(); err == nil {
			t.Errorf("Validate() with template %q = nil; every row would fail with an illegal topic name", tpl)
		}
	}
}

func TestConfigColumns(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"default", DefaultConfig(), []string{"id", "aggregateid", "payload", "aggregatetype"}},
		{"literal topic reads no topic column", Config{Tables: []string{"t"}, IDColumn: "id", KeyColumn: "k", PayloadColumn: "p", TopicTemplate: "events"},
			[]string{"id", "k", "p"}},
		{"each column once, in order", Config{
			Tables: []string{"t"}, IDColumn: "id", KeyColumn: "aggregateid", PayloadColumn: "payload",
			TopicTemplate: "{tenant}.{aggregatetype}.{tenant}",
			Headers:       []HeaderColumn{{Column: "type", Name: "eventType"}, {Column: "tenant", Name: "tenant"}, {Column: "id", Name: "eventId"}},
		}, []string{"id", "aggregateid", "payload", "tenant", "aggregatetype", "type"}},
		{"key is the payload", Config{Tables: []string{"t"}, IDColumn: "id", KeyColumn: "payload", PayloadColumn: "payload", AggregateTypeColumn: "id"},
			[]string{"id", "payload"}},
	} {
		got, err := c.cfg.Columns()
		if err != nil {
			t.Errorf("%s: Columns() error: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: Columns() = %q, want %q", c.name, got, c.want)
		}
	}
	c := DefaultConfig()
	c.TopicTemplate = "{broken"
	if cols, err := c.Columns(); err == nil {
		t.Errorf("Columns() with a broken template = %q, nil; want an error", cols)
	}
}

func TestValidTopic(t *testing.T) {
	legal := []string{
		"a", "outbox.event.Order", "A-b_c.9", "...", ".hidden", "-", "_",
		strings.Repeat("x", 249),
	}
	for _, name := range legal {
		if err := ValidTopic(name); err != nil {
			t.Errorf("ValidTopic(%q) = %v, want nil", name, err)
		}
	}
	for _, c := range []struct {
		name, wantErr string
	}{
		{"", "empty"},
		{".", "not allowed"},
		{"..", "not allowed"},
		{strings.Repeat("x", 250), "250 characters long, Kafka allows 249"},
		{"a b", "' '"},
		{"a/b", "'/'"},
		{"a:b", "':'"},
		{"a,b", "','"},
		{"a\x00b", `'\x00'`},
		{"ordersé", "Kafka allows only [a-zA-Z0-9._-]"},
	} {
		err := ValidTopic(c.name)
		if err == nil {
			t.Errorf("ValidTopic(%q) = nil, want an error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("ValidTopic(%q) = %q, want it to contain %q", c.name, err, c.wantErr)
		}
	}
}

func TestValidTopicTruncatesLongNamesInErrors(t *testing.T) {
	name := strings.Repeat("a", 200) + " b"
	err := ValidTopic(name)
	if err == nil {
		t.Fatal("ValidTopic accepted a name with a space")
	}
	if strings.Contains(err.Error(), name) {
		t.Errorf("error quotes the whole %d-character name: %q", len(name), err)
	}
	if !strings.Contains(err.Error(), "…") {
		t.Errorf("error %q does not mark the name as truncated", err)
	}
}

func TestParseTemplate(t *testing.T) {
	lit := func(s string) part { return part{literal: s} }
	col := func(s string) part { return part{column: s} }
	for _, c := range []struct {
		in   string
		want template
	}{
		{"outbox.event.{aggregatetype}", template{lit("outbox.event."), col("aggregatetype")}},
		{"events", template{lit("events")}},
		{"{type}", template{col("type")}},
		{"{a}{b}", template{col("a"), col("b")}},
		{"{tenant}.outbox.{type}.v1", template{col("tenant"), lit(".outbox."), col("type"), lit(".v1")}},
		{"{weird name-1}", template{col("weird name-1")}},
	} {
		got, err := parseTemplate(c.in)
		if err != nil {
			t.Errorf("parseTemplate(%q) error: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseTemplate(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestParseTemplateErrors(t *testing.T) {
	for _, c := range []struct{ in, wantErr string }{
		{"", "empty"},
		{"{", "unmatched '{'"},
		{"a.{type", "unmatched '{'"},
		{"}", "unmatched '}'"},
		{"a}b", "unmatched '}'"},
		{"a}{b}", "unmatched '}'"},
		{"{a}b}", "unmatched '}'"},
		{"{a}}", "unmatched '}'"},
		{"{}", "bad placeholder {}"},
		{"x.{}", "bad placeholder {}"},
		{"{a{b}", "bad placeholder {a{b}"},
	} {
		tpl, err := parseTemplate(c.in)
		if err == nil {
			t.Errorf("parseTemplate(%q) = %+v, want an error", c.in, tpl)
			continue
		}
		if !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("parseTemplate(%q) error %q, want it to contain %q", c.in, err, c.wantErr)
		}
	}
}

func TestTemplateHasColumns(t *testing.T) {
	for in, want := range map[string]bool{"events": false, "{a}": true, "x.{a}.y": true} {
		tpl, err := parseTemplate(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := tpl.hasColumns(); got != want {
			t.Errorf("parseTemplate(%q).hasColumns() = %v, want %v", in, got, want)
		}
	}
}

func TestRowErrorError(t *testing.T) {
	for _, c := range []struct {
		err  RowError
		want string
	}{
		{RowError{ID: "e1", Topic: "t", Reason: "bad"}, "event id=e1 topic=t: bad"},
		{RowError{Reason: "id is NULL"}, "event id=? topic=?: id is NULL"},
		{RowError{ID: "e1", Reason: "no topic"}, "event id=e1 topic=?: no topic"},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
	}
}
