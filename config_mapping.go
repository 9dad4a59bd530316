package main

import (
	"fmt"
	"strings"

	"github.com/pgoutbox/pgoutbox/debezium"
	"github.com/pgoutbox/pgoutbox/outbox"
)

// build returns the outbox mapping of the Mapping flags (tables qualified by schema
// public when they are not), naming the flag of a bad value.
func (f mappingFlags) build() (outbox.Config, error) {
	var headers []outbox.HeaderColumn
	for _, h := range f.headers.values {
		col, name, ok := strings.Cut(h, "=")
		if !ok {
			name = col
		}
		headers = append(headers, outbox.HeaderColumn{Column: strings.TrimSpace(col), Name: strings.TrimSpace(name)})
	}
	m := outbox.Config{
		IDColumn:                *f.idCol,
		KeyColumn:               *f.keyCol,
		AggregateTypeColumn:     *f.typeCol,
		PayloadColumn:           *f.payloadCol,
		TopicTemplate:           *f.topic,
		Headers:                 headers,
		RouteTopicRegex:         *f.routeRegex,
		RouteTopicReplacement:   *f.routeReplacement,
		TimestampColumn:         *f.timestampCol,
		SchemaVersionColumn:     *f.versionCol,
		TombstoneOnEmptyPayload: *f.tombstoneOnEmpty,
		ExpandJSONPayload:       *f.expandJSON,
		TopicPrefix:             *f.topicPrefix,
	}
	switch tables := f.tables.values; {
	case len(tables) == 0:
		m.Tables = outbox.DefaultConfig().Tables
	case len(tables) == 1 && strings.TrimSpace(tables[0]) == "":
		// --table "": a tableless outbox (--messages-prefix)
	default:
		for _, t := range tables {
			t = strings.TrimSpace(t)
			if t == "" {
				return m, &usageError{fmt.Errorf(`--table "" means no table and cannot be given with other tables`)}
			}
			m.Tables = append(m.Tables, qualify(t))
		}
	}
	for _, ff := range []struct {
		flag string
		dst  *outbox.Format
		v    string
	}{{"key-format", &m.KeyFormat, *f.keyFormat}, {"value-format", &m.ValueFormat, *f.valueFormat}, {"header-format", &m.HeaderFormat, *f.headerFormat}} {
		format, err := outbox.ParseFormat(ff.v)
		if err != nil {
			return m, &usageError{fmt.Errorf("--%s: %w", ff.flag, err)}
		}
		*ff.dst = format
	}
	for _, spec := range f.fields.values {
		fields, err := outbox.ParseFields(spec)
		if err != nil {
			return m, &usageError{fmt.Errorf("--additional-field: %w", err)}
		}
		m.Fields = append(m.Fields, fields...)
	}
	for _, e := range []struct {
		flag, value string
		dst         *string
		allowed     []string
	}{
		{"additional-field-missing", *f.fieldsMissing, &m.MissingFields, []string{outbox.MissingError, outbox.MissingIgnore}},
		{"json-payload-null-behavior", *f.jsonNulls, &m.JSONPayloadNulls, []string{outbox.NullIgnore, outbox.NullOptionalBytes}},
		{"op-invalid-behavior", *f.invalidOp, &m.InvalidOp, []string{outbox.OpWarn, outbox.OpError, outbox.OpFatal}},
	} {
		v := strings.ToLower(strings.TrimSpace(e.value))
		ok := false
		for _, a := range e.allowed {
			ok = ok || v == a
		}
		if !ok {
			return m, &usageError{fmt.Errorf("--%s %q: want %s", e.flag, e.value, strings.Join(e.allowed, " or "))}
		}
		*e.dst = v
	}
	return m, nil
}

// applyDebezium reads --debezium-config and sets every flag it implies that was not
// given explicitly (on the command line or in the environment). Kafka properties are
// returned apart: they merge with --kafka-config-file and --kafka-config property by
// property, the explicit ones winning.
func (f *relayFlags) applyDebezium() (*debezium.Result, []string, error) {
	if *f.debeziumConfig == "" {
		return nil, nil, nil
	}
	r, err := readDebezium(*f.debeziumConfig)
	if err != nil {
		return nil, nil, err
	}
	var kafka []string
	for _, fl := range r.Flags {
		if fl.Name == "kafka-config" {
			kafka = append(kafka, fl.Value)
			continue
		}
		if f.explicit[fl.Name] {
			continue
		}
		if fl.Problem != "" {
			return nil, nil, &usageError{fmt.Errorf("--debezium-config: --%s: %s", fl.Name, fl.Problem)}
		}
		if err := f.fs.Set(fl.Name, fl.Value); err != nil {
			return nil, nil, &usageError{fmt.Errorf("--debezium-config: --%s from %s: %v", fl.Name, strings.Join(fl.From, ", "), err)}
		}
	}
	return r, kafka, nil
}

// readDebezium reads and converts a Debezium connector configuration file.
func readDebezium(path string) (*debezium.Result, error) {
	o, err := debezium.ReadFile(path)
	if err != nil {
		return nil, &usageError{err}
	}
	r, err := debezium.Convert(o)
	if err != nil {
		return nil, &usageError{err}
	}
	return r, nil
}
