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

// Config names the outbox tables and how their columns become Kafka records. The field
// comments name the Debezium EventRouter option each one stands for.
type Config struct {
	// Tables are the schema-qualified outbox tables, e.g. "public.outbox" (Debezium:
	// table.include.list). They share one column layout; each event is routed by its
	// own row, as Debezium routes every table of the connector through one EventRouter.
	Tables              []string
	IDColumn            string // event id, sent as header "id" (table.field.event.id)
	KeyColumn           string // record key (table.field.event.key)
	AggregateTypeColumn string // routes the record (route.by.field)
	PayloadColumn       string // record value (table.field.event.payload)
	// TopicTemplate builds the topic from column values: "{column}" placeholders.
	// Empty means "outbox.event.{<AggregateTypeColumn>}", or the route regex below.
	TopicTemplate string
	// RouteTopicRegex and RouteTopicReplacement route as Debezium's RegexRouter does on
	// the AggregateTypeColumn value (route.topic.regex, route.topic.replacement). Either
	// one set selects this routing; the other then takes Debezium's default.
	RouteTopicRegex       string
	RouteTopicReplacement string
	// Headers are extra columns sent as headers, in this order, before Fields.
	Headers []HeaderColumn
	// Fields are Debezium's additional fields: headers, envelope fields beside the
	// payload, or the partition (table.fields.additional.placement).
	Fields []Field
	// MissingFields is what a Field whose column the table lacks does: MissingError
	// (default) or MissingIgnore (table.field.additional.missing).
	MissingFields string
	// TimestampColumn sets the record timestamp from a timestamp column; NULL or empty
	// means the commit time (table.field.event.timestamp).
	TimestampColumn string
	// SchemaVersionColumn sets the version of the envelope schema from an integer column
	// (table.field.event.schema.version); it matters only for a json-envelope value with
	// envelope fields.
	SchemaVersionColumn string
	// TombstoneOnEmptyPayload publishes a NULL or blank payload as a tombstone
	// (route.tombstone.on.empty.payload).
	TombstoneOnEmptyPayload bool
	// ExpandJSONPayload publishes a JSON text payload as JSON rather than as a JSON
	// string (table.expand.json.payload); JSONPayloadNulls is NullIgnore (default) or
	// NullOptionalBytes (table.json.payload.null.behavior).
	ExpandJSONPayload bool
	JSONPayloadNulls  string
	// InvalidOp is what an UPDATE of an outbox table does, when the publication
	// publishes updates: OpWarn (default), OpError (both logged and skipped) or OpFatal
	// (stop) (table.op.invalid.behavior). Deletes are skipped silently.
	InvalidOp string
	// KeyFormat, ValueFormat and HeaderFormat say which Kafka Connect converter's bytes
	// to write (key.converter, value.converter, header.converter).
	KeyFormat, ValueFormat, HeaderFormat Format
	// TopicPrefix is Debezium's topic.prefix. It names the schema of a json-envelope
	// value with envelope fields ("<prefix>.<schema>.<table>.<route value>.Value").
	TopicPrefix string
}

// HeaderColumn sends Column's value as header Name.
type HeaderColumn struct {
	Column string
	Name   string
}

// Field is one of Debezium's additional fields: Column placed as Placement under Alias.
type Field struct {
	Column    string
	Placement string // PlaceHeader, PlaceEnvelope or PlacePartition
	Alias     string // header or envelope field name; Column when empty
}

// Placements of an additional field (EventRouterConfigDefinition.AdditionalFieldPlacement).
const (
	PlaceHeader    = "header"
	PlaceEnvelope  = "envelope"
	PlacePartition = "partition"
)

// What a missing additional field does (AdditionalFieldMissingBehavior).
const (
	MissingError  = "error"
	MissingIgnore = "ignore"
)

// What an UPDATE of an outbox table does (EventRouterConfigDefinition.InvalidOperationBehavior).
const (
	OpWarn  = "warn"
	OpError = "error"
	OpFatal = "fatal"
)

// ParseFields parses Debezium's table.fields.additional.placement syntax:
// "column:placement[:alias]" entries separated by commas
// (EventRouterConfigDefinition.parseAdditionalFieldsConfig). Placements are matched
// case-insensitively; names are trimmed.
func ParseFields(spec string) ([]Field, error) {
	var fields []Field
	for _, entry := range strings.Split(spec, ",") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		parts := strings.Split(entry, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("additional field %q: want column:placement or column:placement:alias", strings.TrimSpace(entry))
		}
		f := Field{Column: strings.TrimSpace(parts[0]), Placement: strings.ToLower(strings.TrimSpace(parts[1]))}
		if len(parts) == 3 {
			f.Alias = strings.TrimSpace(parts[2])
		}
		switch f.Placement {
		case PlaceHeader, PlaceEnvelope, PlacePartition:
		default:
			return nil, fmt.Errorf("additional field %q: placement %q is not header, envelope or partition", strings.TrimSpace(entry), parts[1])
		}
		if f.Column == "" {
			return nil, fmt.Errorf("additional field %q: column must not be empty", strings.TrimSpace(entry))
		}
		fields = append(fields, f)
	}
	return fields, nil
}

// name is the header or envelope field name of f.
func (f Field) name() string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Column
}

// DefaultConfig returns Debezium's EventRouter defaults.
func DefaultConfig() Config {
	return Config{
		Tables:              []string{"public.outbox"},
		IDColumn:            "id",
		KeyColumn:           "aggregateid",
		AggregateTypeColumn: "aggregatetype",
		PayloadColumn:       "payload",
		MissingFields:       MissingError,
		JSONPayloadNulls:    NullIgnore,
		InvalidOp:           OpWarn,
		KeyFormat:           FormatRaw,
		ValueFormat:         FormatRaw,
		HeaderFormat:        FormatRaw,
	}
}

// FirstTable is the first configured table, or "" for none.
func (c Config) FirstTable() string {
	if len(c.Tables) == 0 {
		return ""
	}
	return c.Tables[0]
}

// Topic returns the effective topic template; with regex routing it describes the route.
func (c Config) Topic() string {
	if c.TopicTemplate != "" {
		return c.TopicTemplate
	}
	if c.routed() {
		regex, repl := c.route()
		return fmt.Sprintf("%s ~ s/%s/%s/", c.AggregateTypeColumn, regex, repl)
	}
	return "outbox.event.{" + c.AggregateTypeColumn + "}"
}

// routed reports whether topics come from the regex router.
func (c Config) routed() bool {
	return c.TopicTemplate == "" && (c.RouteTopicRegex != "" || c.RouteTopicReplacement != "")
}

// route returns the effective regex and replacement.
func (c Config) route() (regex, replacement string) {
	regex, replacement = c.RouteTopicRegex, c.RouteTopicReplacement
	if regex == "" {
		regex = DefaultRouteRegex
	}
	if replacement == "" {
		replacement = DefaultRouteReplacement
	}
	return regex, replacement
}

// template returns the parsed topic template; with regex routing, nil.
func (c Config) template() (template, error) {
	if c.routed() {
		return nil, nil
	}
	return parseTemplate(c.Topic())
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

// Columns lists every column the mapping needs, each once, in a stable order. With
// MissingIgnore, additional fields are not needed: the table may lack them.
func (c Config) Columns() ([]string, error) {
	tpl, err := c.template()
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
	if c.routed() || c.ValueFormat == FormatJSONEnvelope && c.hasEnvelopeFields() {
		add(c.AggregateTypeColumn)
	}
	for _, p := range tpl {
		add(p.column)
	}
	for _, h := range c.Headers {
		add(h.Column)
	}
	if c.MissingFields != MissingIgnore {
		for _, f := range c.Fields {
			add(f.Column)
		}
	}
	add(c.TimestampColumn)
	add(c.SchemaVersionColumn)
	return cols, nil
}

// NeedsColumnInfo reports whether the mapping needs the catalog's NOT NULL facts
// (Mapper.SetColumns): only a json-envelope schema says whether a field is optional.
func (c Config) NeedsColumnInfo() bool {
	return c.KeyFormat == FormatJSONEnvelope || c.ValueFormat == FormatJSONEnvelope || c.HeaderFormat == FormatJSONEnvelope
}

// hasEnvelopeFields reports whether the value is Debezium's struct of payload and
// envelope-placed fields rather than the payload alone.
func (c Config) hasEnvelopeFields() bool {
	for _, f := range c.Fields {
		if f.Placement == PlaceEnvelope {
			return true
		}
	}
	return false
}

// Validate checks the configuration without a database.
func (c Config) Validate() error {
	if len(c.Tables) == 0 {
		return errors.New("no outbox table is configured")
	}
	tables := map[string]bool{}
	for _, t := range c.Tables {
		schema, name, err := SplitTable(t)
		if err != nil {
			return err
		}
		if tables[schema+"."+name] {
			return fmt.Errorf("table %s is configured twice", schema+"."+name)
		}
		tables[schema+"."+name] = true
	}
	for flag, v := range map[string]string{"id column": c.IDColumn, "key column": c.KeyColumn, "payload column": c.PayloadColumn} {
		if v == "" {
			return fmt.Errorf("%s must not be empty", flag)
		}
	}
	if c.TopicTemplate == "" && c.AggregateTypeColumn == "" {
		return errors.New("either a topic template or an aggregate type column is needed")
	}
	if c.TopicTemplate != "" && (c.RouteTopicRegex != "" || c.RouteTopicReplacement != "") {
		return errors.New("a topic template and a route topic regex or replacement exclude each other; use one")
	}
	if c.routed() {
		if _, err := newRouter(c.route()); err != nil {
			return err
		}
	} else {
		tpl, err := c.template()
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
	envelope := map[string]bool{envelopePayload: true}
	for _, f := range c.Fields {
		if f.Column == "" {
			return errors.New("additional field: column must not be empty")
		}
		switch f.Placement {
		case PlaceHeader, PlacePartition:
		case PlaceEnvelope:
			// SchemaBuilder.field refuses a second field of one name, so Debezium fails.
			if envelope[f.name()] {
				return fmt.Errorf("envelope field %q is set twice (the payload is %q)", f.name(), envelopePayload)
			}
			envelope[f.name()] = true
		default:
			return fmt.Errorf("additional field %q: placement %q is not header, envelope or partition", f.Column, f.Placement)
		}
	}
	for _, f := range []struct {
		what string
		v    Format
	}{{"key format", c.KeyFormat}, {"value format", c.ValueFormat}, {"header format", c.HeaderFormat}} {
		if _, err := ParseFormat(string(f.v)); err != nil {
			return fmt.Errorf("%s: %w", f.what, err)
		}
	}
	switch c.MissingFields {
	case "", MissingError, MissingIgnore:
	default:
		return fmt.Errorf("missing additional field behavior %q: want error or ignore", c.MissingFields)
	}
	switch c.JSONPayloadNulls {
	case "", NullIgnore, NullOptionalBytes:
	default:
		return fmt.Errorf("JSON payload null behavior %q: want ignore or optional_bytes", c.JSONPayloadNulls)
	}
	switch c.InvalidOp {
	case "", OpWarn, OpError, OpFatal:
	default:
		return fmt.Errorf("invalid operation behavior %q: want warn, error or fatal", c.InvalidOp)
	}
	raw := c.ValueFormat == "" || c.ValueFormat == FormatRaw
	if raw && c.hasEnvelopeFields() {
		return errors.New("envelope fields need a JSON value format: Kafka's StringConverter would write Struct.toString() of the envelope")
	}
	if raw && c.ExpandJSONPayload {
		return errors.New("expanding the JSON payload needs a JSON value format: Kafka's StringConverter would write Struct.toString() of it")
	}
	if c.ValueFormat == FormatJSONEnvelope && c.hasEnvelopeFields() && c.TopicPrefix == "" {
		return errors.New("a json-envelope value with envelope fields names its schema after Debezium's topic.prefix: set the topic prefix")
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
