package outbox

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// jnode is a parsed JSON value, kept the way Jackson's ObjectMapper.readTree keeps it for
// Debezium's JSON expansion: object members in document order (a repeated name keeps its
// first position and its last value, as ObjectNode's LinkedHashMap does), and numbers
// classified as Jackson's default JsonNodeDeserializer does: an integer that fits an int
// is an IntNode, one that fits a long a LongNode, a larger one a BigIntegerNode, and any
// number with a fraction or exponent a DoubleNode.
type jnode struct {
	kind  jkind
	str   string  // jString; the text of a jBigInt
	num   int64   // jInt, jLong
	dbl   float64 // jDouble
	bool  bool
	names []string
	vals  []*jnode // object members, array elements
}

type jkind uint8

const (
	jNull jkind = iota
	jBool
	jString
	jInt
	jLong
	jBigInt
	jDouble
	jObject
	jArray
)

// maxJSONDepth is Jackson's default StreamReadConstraints nesting limit.
const maxJSONDepth = 1000

var errBadJSON = errors.New("payload is not valid JSON")

// parseJSON reads the first JSON value of s; trailing text is ignored, as readTree does
// without FAIL_ON_TRAILING_TOKENS.
func parseJSON(s []byte) (*jnode, error) {
	p := jparser{s: s}
	return p.value(0)
}

type jparser struct {
	s []byte
	i int
}

func (p *jparser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jparser) value(depth int) (*jnode, error) {
	if depth > maxJSONDepth {
		return nil, errBadJSON
	}
	p.ws()
	if p.i >= len(p.s) {
		return nil, errBadJSON
	}
	switch c := p.s[p.i]; {
	case c == '{':
		p.i++
		n := &jnode{kind: jObject}
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			return n, nil
		}
		for {
			p.ws()
			if p.i >= len(p.s) || p.s[p.i] != '"' {
				return nil, errBadJSON
			}
			name, err := p.string()
			if err != nil {
				return nil, err
			}
			p.ws()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, errBadJSON
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			replaced := false
			for k, existing := range n.names {
				if existing == name {
					n.vals[k], replaced = v, true
					break
				}
			}
			if !replaced {
				n.names = append(n.names, name)
				n.vals = append(n.vals, v)
			}
			p.ws()
			if p.i >= len(p.s) {
				return nil, errBadJSON
			}
			if p.s[p.i] == ',' {
				p.i++
				continue
			}
			if p.s[p.i] == '}' {
				p.i++
				return n, nil
			}
			return nil, errBadJSON
		}
	case c == '[':
		p.i++
		n := &jnode{kind: jArray}
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == ']' {
			p.i++
			return n, nil
		}
		for {
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			n.vals = append(n.vals, v)
			p.ws()
			if p.i >= len(p.s) {
				return nil, errBadJSON
			}
			if p.s[p.i] == ',' {
				p.i++
				continue
			}
			if p.s[p.i] == ']' {
				p.i++
				return n, nil
			}
			return nil, errBadJSON
		}
	case c == '"':
		s, err := p.string()
		if err != nil {
			return nil, err
		}
		return &jnode{kind: jString, str: s}, nil
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []struct {
			word string
			node jnode
		}{{"true", jnode{kind: jBool, bool: true}}, {"false", jnode{kind: jBool}}, {"null", jnode{kind: jNull}}} {
			if len(p.s)-p.i >= len(lit.word) && string(p.s[p.i:p.i+len(lit.word)]) == lit.word {
				p.i += len(lit.word)
				n := lit.node
				return &n, nil
			}
		}
		return nil, errBadJSON
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, errBadJSON
}

func (p *jparser) number() (*jnode, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	intStart := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if p.i == intStart || p.s[intStart] == '0' && p.i-intStart > 1 {
		return nil, errBadJSON // no digits, or a leading zero
	}
	isFloat := false
	if p.i < len(p.s) && p.s[p.i] == '.' {
		isFloat = true
		p.i++
		fracStart := p.i
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		if p.i == fracStart {
			return nil, errBadJSON
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		isFloat = true
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		expStart := p.i
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		if p.i == expStart {
			return nil, errBadJSON
		}
	}
	text := string(p.s[start:p.i])
	if isFloat {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) { // out of range: ±Infinity, as Double.parseDouble
			return nil, errBadJSON
		}
		return &jnode{kind: jDouble, dbl: f}, nil
	}
	v, err := strconv.ParseInt(text, 10, 64)
	switch {
	case err != nil:
		return &jnode{kind: jBigInt, str: text}, nil
	case v >= -1<<31 && v < 1<<31:
		return &jnode{kind: jInt, num: v}, nil
	}
	return &jnode{kind: jLong, num: v}, nil
}

// string reads a JSON string at p.i (the opening quote). Unescaped control characters
// are an error, as in Jackson without ALLOW_UNESCAPED_CONTROL_CHARS.
func (p *jparser) string() (string, error) {
	p.i++
	var b []byte
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			if b == nil {
				s := string(p.s[start:p.i])
				p.i++
				return s, nil
			}
			b = append(b, p.s[start:p.i]...)
			p.i++
			return string(b), nil
		case c < 0x20:
			return "", errBadJSON
		case c == '\\':
			b = append(b, p.s[start:p.i]...)
			p.i++
			if p.i >= len(p.s) {
				return "", errBadJSON
			}
			switch e := p.s[p.i]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := p.hex4(p.i + 1)
				if !ok {
					return "", errBadJSON
				}
				p.i += 4
				if utf16.IsSurrogate(r) {
					if r2, ok := p.hex4(p.i + 3); ok && p.i+2 < len(p.s) && p.s[p.i+1] == '\\' && p.s[p.i+2] == 'u' {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							r = dec
							p.i += 6
						}
					}
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", errBadJSON
			}
			p.i++
			start = p.i
		default:
			p.i++
		}
	}
	return "", errBadJSON
}

func (p *jparser) hex4(at int) (rune, bool) {
	if at+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range p.s[at : at+4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}
