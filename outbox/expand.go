package outbox

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// JSON payload expansion (Debezium's table.expand.json.payload), following
// EventRouterDelegate.apply (EventRouterDelegate.java:162-181) and JsonSchemaData
// (JsonSchemaData.java). Every outcome of Debezium's try/catch is kept:
//   - the text does not start with '{' or '[', or is not JSON, or its schema cannot be
//     inferred (a ConnectException from toConnectSchema): Debezium logs "JSON expansion
//     failed" and publishes the string unchanged;
//   - the schema was inferred but the value does not fit it (toConnectData throws after
//     payloadSchema was replaced, EventRouterDelegate.java:169-170): Debezium's converter
//     then fails the task; pgoutbox reports the row;
//   - an empty top-level array infers no schema: the string is published with none.

// NullBehavior values: Debezium's table.json.payload.null.behavior.
const (
	NullIgnore        = "ignore"         // a null member is left out of the schema and the value
	NullOptionalBytes = "optional_bytes" // a null member becomes an optional bytes field holding null
)

type expandOutcome uint8

const (
	expandKept       expandOutcome = iota // publish the original string with its column schema
	expandDone                            // publish node with schema s
	expandSchemaless                      // publish the original string with no schema
)

// errExpandMismatch: Debezium's converter would fail on this payload.
var errExpandMismatch = errors.New("expanded JSON payload does not fit the schema Debezium infers from it (Debezium's converter fails on it)")

// expandPayload expands text, the payload column's value, into a value and its schema.
func expandPayload(column string, text []byte, nulls string) (*schema, *jnode, expandOutcome, error) {
	if len(text) == 0 || text[0] != '{' && text[0] != '[' { // parseJsonPayload, EventRouterDelegate.java:317-321
		return nil, nil, expandKept, nil
	}
	doc, err := parseJSON(text)
	if err != nil {
		return nil, nil, expandKept, nil
	}
	s, err := inferSchema(column, true, doc, nulls)
	if err != nil {
		return nil, nil, expandKept, nil
	}
	switch {
	case s == nil: // empty array: new Struct(null) throws after payloadSchema = null
		return nil, nil, expandSchemaless, nil
	case s.typ != "struct": // toConnectData builds a Struct of a non-struct schema
		return nil, nil, expandKept, errExpandMismatch
	}
	if err := checkValue(s, doc); err != nil {
		return nil, nil, expandKept, err
	}
	return s, doc, expandDone, nil
}

// inferSchema is JsonSchemaData.toConnectSchema (JsonSchemaData.java:52-88). A nil schema
// with a nil error is Java's null: the member is left out. named is false where Java
// passes a null key.
func inferSchema(key string, named bool, n *jnode, nulls string) (*schema, error) {
	switch n.kind {
	case jString:
		return &schema{typ: "string", optional: true}, nil
	case jBool:
		return &schema{typ: "boolean", optional: true}, nil
	case jInt:
		return &schema{typ: "int32", optional: true}, nil
	case jLong:
		return &schema{typ: "int64", optional: true}, nil
	case jBigInt, jDouble:
		return &schema{typ: "double", optional: true}, nil
	case jArray:
		if len(n.vals) == 0 {
			return nil, nil
		}
		items, err := arrayItems(key, named, n, nulls)
		if err != nil {
			return nil, err
		}
		return &schema{typ: "array", optional: true, items: items}, nil
	case jObject:
		s := &schema{typ: "struct", optional: true}
		if named {
			s.name = key
		}
		for i, name := range n.names {
			fieldKey := name
			if named && strings.TrimSpace(key) != "" {
				fieldKey = key + "." + name
			}
			fs, err := inferSchema(fieldKey, true, n.vals[i], nulls)
			if err != nil {
				return nil, err
			}
			if fs != nil && s.field(name) == nil {
				s.fields = append(s.fields, field{name, fs})
			}
		}
		return s, nil
	case jNull:
		if nulls == NullOptionalBytes {
			return &schema{typ: "bytes", optional: true}, nil
		}
	}
	return nil, nil
}

// arrayItems is toConnectSchemaWithCycles (JsonSchemaData.java:90-116). The schemas of
// object elements are merged; Debezium collects them in a HashSet, so when elements have
// different shapes its field order depends on hash codes that change from one JVM to the
// next. pgoutbox merges them in the order they first appear.
func arrayItems(key string, named bool, arr *jnode, nulls string) (*schema, error) {
	sample, err := firstArrayElement(arr)
	if err != nil {
		return nil, err
	}
	if sample.kind != jObject {
		s, err := inferSchema("", false, sample, nulls)
		if err != nil {
			return nil, err
		}
		if s == nil {
			return nil, errors.New("array has unrecognized member schema")
		}
		return s, nil
	}
	var distinct []*schema
	for _, el := range arr.vals {
		if el.kind != jObject {
			continue
		}
		s, err := inferSchema(key, named, el, nulls)
		if err != nil {
			return nil, err
		}
		seen := false
		for _, d := range distinct {
			seen = seen || schemaEqual(d, s)
		}
		if !seen {
			distinct = append(distinct, s)
		}
	}
	var merged *schema
	for _, s := range distinct {
		merged = mergeSchema(merged, s)
	}
	return merged, nil
}

// mergeSchema is JsonSchemaData.mergeSchema (JsonSchemaData.java:118-142): the left
// fields, then new right ones; a bytes field (an inferred null) gives way to another
// type. SchemaUtil.copySchemaBasics copies name, version, doc and parameters but not
// optionality, so a merged schema is required.
func mergeSchema(left, right *schema) *schema {
	if left == nil {
		return right
	}
	fields := append([]field(nil), left.fields...)
	for _, f := range right.fields {
		found := false
		for i := range fields {
			if fields[i].name == f.name {
				found = true
				if !schemaEqual(fields[i].schema, f.schema) && fields[i].schema.typ == "bytes" && f.schema.typ != "bytes" {
					fields[i] = f
				}
				break
			}
		}
		if !found {
			fields = append(fields, f)
		}
	}
	return &schema{typ: left.typ, name: left.name, version: left.version, doc: left.doc, params: left.params, fields: fields}
}

// firstArrayElement is getFirstArrayElement (JsonSchemaData.java:144-182): the first
// non-null element, after checking that all non-null elements have one JSON type and,
// for numbers, one inferred schema.
func firstArrayElement(arr *jnode) (*jnode, error) {
	ref := &jnode{kind: jNull}
	for _, el := range arr.vals {
		if el.kind == jNull {
			continue
		}
		if ref.kind == jNull {
			ref = el
		}
		if nodeType(el) != nodeType(ref) {
			return nil, errors.New("field is not a homogenous array")
		}
		if nodeType(ref) == jInt && numberSchema(ref) != numberSchema(el) {
			return nil, errors.New("field is not a homogenous array, different number types")
		}
	}
	return ref, nil
}

// nodeType folds the number kinds into one, as Jackson's JsonNodeType.NUMBER.
func nodeType(n *jnode) jkind {
	switch n.kind {
	case jInt, jLong, jBigInt, jDouble:
		return jInt
	}
	return n.kind
}

func numberSchema(n *jnode) string {
	switch n.kind {
	case jInt:
		return "int32"
	case jLong:
		return "int64"
	}
	return "double"
}

// javaType is the schema type the Java value JsonSchemaData makes of a node fits.
func javaType(k jkind) string {
	switch k {
	case jString:
		return "string"
	case jBool:
		return "boolean"
	case jInt:
		return "int32"
	case jLong:
		return "int64"
	case jDouble:
		return "double"
	case jObject:
		return "struct"
	case jArray:
		return "array"
	}
	return ""
}

// checkValue reports whether n converts into a value of s, as JsonSchemaData.toConnectData
// and the Struct.put validation (ConnectSchema.validateValue) decide.
func checkValue(s *schema, n *jnode) error {
	_, err := appendExpanded(nil, s, n)
	return err
}

// appendExpanded writes n as JsonConverter.convertToJson writes the Connect value
// JsonSchemaData.getStructFieldValue (JsonSchemaData.java:212-239) made of it, checked
// against s as Struct.put checks it: the node's Java type must be the one the schema
// wants (an int node for int32, a long node for int64, a double node for double; a big
// integer becomes a BigDecimal, which no schema takes), and null only where optional.
func appendExpanded(dst []byte, s *schema, n *jnode) ([]byte, error) {
	if n == nil || n.kind == jNull {
		if !s.optional {
			return dst, errExpandMismatch
		}
		return append(dst, "null"...), nil
	}
	if n.kind == jBigInt || javaType(n.kind) != s.typ {
		return dst, errExpandMismatch
	}
	switch n.kind {
	case jString:
		return appendJSONString(dst, n.str), nil
	case jBool:
		return strconv.AppendBool(dst, n.bool), nil
	case jInt, jLong:
		return strconv.AppendInt(dst, n.num, 10), nil
	case jDouble:
		return appendJavaDouble(dst, n.dbl), nil
	case jArray:
		dst = append(dst, '[')
		for i, el := range n.vals {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendExpanded(dst, s.items, el); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	}
	// A struct: the schema's fields in order; a member the document lacks is null.
	dst = append(dst, '{')
	for i, f := range s.fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, f.name)
		dst = append(dst, ':')
		var member *jnode
		for k, name := range n.names {
			if name == f.name {
				member = n.vals[k]
				break
			}
		}
		var err error
		if dst, err = appendExpanded(dst, f.schema, member); err != nil {
			return dst, fmt.Errorf("%w (member %q)", err, f.name)
		}
	}
	return append(dst, '}'), nil
}
