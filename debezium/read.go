// Package debezium reads a Debezium PostgreSQL connector configuration and says which
// pgoutbox flags reproduce it, so a team can switch from Debezium by changing the process
// and not the consumers. Every option is accounted for: mapped to a flag, accepted as
// irrelevant to an outbox (with the reason), or refused by name.
package debezium

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Options is a connector configuration: option names and their values as text.
type Options struct {
	Name   string // the connector's name, when the file gives one
	Values map[string]string
}

// ReadFile reads a connector configuration: the JSON posted to Kafka Connect's REST API
// ({"name":…,"config":{…}} to POST /connectors, or the bare config object to
// PUT /connectors/<name>/config) or a Java .properties file.
func ReadFile(path string) (*Options, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read debezium config: %w", err)
	}
	o, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("read debezium config %s: %w", path, err)
	}
	return o, nil
}

// Parse reads a configuration's bytes; JSON when they start with '{'.
func Parse(b []byte) (*Options, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		return parseJSON(t)
	}
	return parseProperties(b)
}

func parseJSON(b []byte) (*Options, error) {
	var top map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	o := &Options{Values: map[string]string{}}
	obj := top
	if raw, ok := top["config"]; ok {
		var cfg map[string]json.RawMessage
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, fmt.Errorf(`"config" is not an object: %w`, err)
		}
		if name, ok := top["name"]; ok {
			if err := json.Unmarshal(name, &o.Name); err != nil {
				return nil, fmt.Errorf(`"name" is not a string: %w`, err)
			}
		}
		for k := range top {
			if k != "config" && k != "name" {
				return nil, fmt.Errorf("unexpected top-level field %q beside name and config", k)
			}
		}
		obj = cfg
	}
	for k, raw := range obj {
		v, err := jsonText(raw)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", k, err)
		}
		o.Values[k] = v
	}
	if o.Name == "" {
		o.Name = o.Values["name"]
	}
	return o, nil
}

// jsonText is a JSON scalar as Kafka Connect reads it into a config string.
func jsonText(raw json.RawMessage) (string, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", err
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("value %s is not a string, number or boolean", raw)
}

// parseProperties reads java.util.Properties.load's format: '#' or '!' comments, the key
// ending at the first unescaped '=', ':' or whitespace, lines continued by an odd number
// of trailing backslashes, and the escapes \t \n \r \f \uXXXX (any other \c is c).
func parseProperties(b []byte) (*Options, error) {
	o := &Options{Values: map[string]string{}}
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	for n := 0; n < len(lines); n++ {
		line := strings.TrimLeft(lines[n], " \t\f")
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		start := n + 1
		for continued(line) && n+1 < len(lines) {
			n++
			line = line[:len(line)-1] + strings.TrimLeft(lines[n], " \t\f")
		}
		key, value, err := splitProperty(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", start, err)
		}
		o.Values[key] = value
	}
	o.Name = o.Values["name"]
	return o, nil
}

func continued(line string) bool {
	n := 0
	for i := len(line) - 1; i >= 0 && line[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

func splitProperty(line string) (string, string, error) {
	var key strings.Builder
	i := 0
	for i < len(line) {
		c := line[i]
		if c == '\\' && i+1 < len(line) {
			// Kept escaped: the key is unescaped once, below, like the value.
			key.WriteString(line[i : i+2])
			i += 2
			continue
		}
		if c == '=' || c == ':' || c == ' ' || c == '\t' || c == '\f' {
			break
		}
		key.WriteByte(c)
		i++
	}
	for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\f') {
		i++
	}
	if i < len(line) && (line[i] == '=' || line[i] == ':') {
		i++
	}
	for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\f') {
		i++
	}
	value, err := unescape(line[i:])
	if err != nil {
		return "", "", err
	}
	k, err := unescape(key.String())
	return k, value, err
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+5 > len(s) {
				return "", fmt.Errorf("malformed \\uxxxx escape")
			}
			r, err := strconv.ParseUint(s[i+1:i+5], 16, 32)
			if err != nil {
				return "", fmt.Errorf("malformed \\uxxxx escape")
			}
			b.WriteRune(rune(r))
			i += 4
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), nil
}

// sortedKeys returns the option names in order, for stable output.
func (o *Options) sortedKeys() []string {
	keys := make([]string, 0, len(o.Values))
	for k := range o.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
