// Package outbox maps outbox rows to Kafka records.
//
// The defaults follow Debezium's outbox EventRouter so a team moving from Debezium changes
// nothing in its application: topic "outbox.event.<aggregatetype>", key from "aggregateid",
// the "payload" column as the value exactly as stored, and a header "id" with the event id.
// The package is pure: it turns decoded values into records and says precisely why a row
// cannot become one, so the caller can apply its error policy.
package outbox

import (
	"errors"
	"fmt"
	"strings"
)

// Config names the outbox table and how its columns become a Kafka record.
type Config struct {
	Table               string // schema-qualified table, e.g. "public.outbox"
	IDColumn            string // event id, sent as header "id"
	KeyColumn           string // record key (Debezium: aggregateid)
	AggregateTypeColumn string // used by the default topic template (Debezium: aggregatetype)
	PayloadColumn       string // record value
	// TopicTemplate builds the topic from column values: "{column}" placeholders.
	// Empty means "outbox.event.{<AggregateTypeColumn>}".
	TopicTemplate string
	// Headers are extra columns sent as headers, in this order.
	Headers []HeaderColumn
}

// HeaderColumn sends Column's value as header Name.
type HeaderColumn struct {
	Column string
	Name   string
}

// DefaultConfig returns Debezium's EventRouter defaults.
func DefaultConfig() Config {
	return Config{
		Table:               "public.outbox",
		IDColumn:            "id",
		KeyColumn:           "aggregateid",
		AggregateTypeColumn: "aggregatetype",
		PayloadColumn:       "payload",
	}
}

// Topic returns the effective topic template.
func (c Config) Topic() string {
	if c.TopicTemplate != "" {
		return c.TopicTemplate
	}
	return "outbox.event.{" + c.AggregateTypeColumn + "}"
}

// SplitTable splits "schema.table" (or "table", meaning schema public) into its parts.
// Quoted identifiers are not supported; names are taken as PostgreSQL stores them.
func SplitTable(table string) (schema, name string, err error) {
	parts := strings.Split(table, ".")
	switch {
	case len(parts) == 1 && parts[0] != "":
		return "public", parts[0], nil
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("table %q: want schema.table", table)
}

// Columns lists every column the mapping reads, each once, in a stable order.
func (c Config) Columns() ([]string, error) {
	tpl, err := parseTemplate(c.Topic())
	if err != nil {
		return nil, err
	}
	var cols []string
	seen := map[string]bool{}
	add := func(name string) {
		if name != "" && !seen[name] {
			seen[name] = true
			cols = append(cols, name)
		}
	}
	add(c.IDColumn)
	add(c.KeyColumn)
	add(c.PayloadColumn)
	for _, p := range tpl {
		add(p.column)
	}
	for _, h := range c.Headers {
		add(h.Column)
	}
	return cols, nil
}

// Validate checks the configuration without a database.
func (c Config) Validate() error {
	if _, _, err := SplitTable(c.Table); err != nil {
		return err
	}
	for flag, v := range map[string]string{"id column": c.IDColumn, "key column": c.KeyColumn, "payload column": c.PayloadColumn} {
		if v == "" {
			return fmt.Errorf("%s must not be empty", flag)
		}
	}
	if c.TopicTemplate == "" && c.AggregateTypeColumn == "" {
		return errors.New("either a topic template or an aggregate type column is needed")
	}
	tpl, err := parseTemplate(c.Topic())
	if err != nil {
		return err
	}
	if !tpl.hasColumns() {
		if err := ValidTopic(c.Topic()); err != nil {
			return fmt.Errorf("topic template: %w", err)
		}
	}
	for _, p := range tpl {
		if err := checkTopicChars(p.literal); err != nil {
			return fmt.Errorf("topic template %q: %w", c.Topic(), err)
		}
	}
	names := map[string]bool{"id": true}
	for _, h := range c.Headers {
		if h.Column == "" || h.Name == "" {
			return fmt.Errorf("header column %q: column and header name must not be empty", h.Column)
		}
		if names[h.Name] {
			return fmt.Errorf("header %q is set twice", h.Name)
		}
		names[h.Name] = true
	}
	return nil
}

// ValidTopic reports why name is not a legal Kafka topic name, or nil.
// Kafka allows 1–249 characters of [a-zA-Z0-9._-], and not "." or "..".
func ValidTopic(name string) error {
	switch {
	case name == "":
		return errors.New("topic name is empty")
	case len(name) > 249:
		return fmt.Errorf("topic name is %d characters long, Kafka allows 249", len(name))
	case name == "." || name == "..":
		return fmt.Errorf("topic name %q is not allowed", name)
	}
	return checkTopicChars(name)
}

// checkTopicChars reports the first character Kafka does not allow in a topic name.
// Validate applies it to the literal parts of a template, which can be checked
// before any row is seen.
func checkTopicChars(name string) error {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q has character %q; Kafka allows only [a-zA-Z0-9._-]", truncate(name, 80), rune(c))
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
