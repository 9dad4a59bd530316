package outbox

import "strconv"

// schema is a Kafka Connect schema, as far as JsonConverter writes it into the "schema"
// half of a json-envelope record.
type schema struct {
	typ      string // JsonSchema's type name: "string", "int32", "bytes", "struct", "array", …
	optional bool
	name     string
	version  int // 0: none
	doc      string
	params   []param // in insertion order: SchemaBuilder keeps a LinkedHashMap (SchemaBuilder.java:201)
	fields   []field // struct
	items    *schema // array
}

type param struct{ key, value string }

type field struct {
	name   string
	schema *schema
}

// appendSchemaJSON writes s as JsonConverter.asJsonSchema does (JsonConverter.java:369-447):
// "type", then "items" (array) or "fields" (struct, each field's schema followed by its
// "field" name, JsonConverter.java:418-421), then "optional", "name", "version", "doc"
// and "parameters" — each only when set. Debezium's schemas for an outbox row carry no
// default values, so "default" never appears.
func appendSchemaJSON(dst []byte, s *schema) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, s.typ...)
	dst = append(dst, '"')
	switch s.typ {
	case "array":
		dst = append(dst, `,"items":`...)
		dst = appendSchemaJSON(dst, s.items)
	case "struct":
		dst = append(dst, `,"fields":[`...)
		for i, f := range s.fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			inner := appendSchemaJSON(dst, f.schema)
			dst = append(inner[:len(inner)-1], `,"field":`...)
			dst = appendJSONString(dst, f.name)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if s.optional {
		dst = append(dst, `,"optional":true`...)
	} else {
		dst = append(dst, `,"optional":false`...)
	}
	if s.name != "" {
		dst = append(dst, `,"name":`...)
		dst = appendJSONString(dst, s.name)
	}
	if s.version != 0 {
		dst = append(dst, `,"version":`...)
		dst = strconv.AppendInt(dst, int64(s.version), 10)
	}
	if s.doc != "" {
		dst = append(dst, `,"doc":`...)
		dst = appendJSONString(dst, s.doc)
	}
	if len(s.params) > 0 {
		dst = append(dst, `,"parameters":{`...)
		for i, p := range s.params {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, p.key)
			dst = append(dst, ':')
			dst = appendJSONString(dst, p.value)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// schemaEqual is ConnectSchema.equals for the schemas JSON expansion builds: type,
// optionality, name, version, doc, parameters, fields (name, position and schema) and
// element schema.
func schemaEqual(a, b *schema) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || a.typ != b.typ || a.optional != b.optional || a.name != b.name ||
		a.version != b.version || a.doc != b.doc || len(a.params) != len(b.params) || len(a.fields) != len(b.fields) {
		return false
	}
	for i := range a.params {
		if a.params[i] != b.params[i] {
			return false
		}
	}
	for i := range a.fields {
		if a.fields[i].name != b.fields[i].name || !schemaEqual(a.fields[i].schema, b.fields[i].schema) {
			return false
		}
	}
	return schemaEqual(a.items, b.items)
}

// field returns the field named name, or nil.
func (s *schema) field(name string) *schema {
	for _, f := range s.fields {
		if f.name == name {
			return f.schema
		}
	}
	return nil
}
