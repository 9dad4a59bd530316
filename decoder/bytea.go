package decoder

import "fmt"

// DecodeBytea decodes the text form of a bytea value, as pgoutput sends it in
// text mode: the hex format (`\x0a1b`, the default bytea_output) or the legacy
// escape format (`\\` and `\ooo` octal escapes). It accepts what PostgreSQL's
// byteain accepts and rejects the rest.
func DecodeBytea(text []byte) ([]byte, error) {
	n := len(text)
	if isHexBytea(text) {
		n = (n - 2) / 2
	}
	return AppendBytea(make([]byte, 0, n), text)
}

// AppendBytea is DecodeBytea appending to dst, for callers that reuse a buffer
// on the hot path. On error dst is returned unchanged.
func AppendBytea(dst, text []byte) ([]byte, error) {
	if isHexBytea(text) {
		return appendHexBytea(dst, text)
	}
	return appendEscapeBytea(dst, text)
}

func isHexBytea(text []byte) bool {
	return len(text) >= 2 && text[0] == '\\' && text[1] == 'x'
}

// appendHexBytea mirrors byteain's hex_decode: pairs of hex digits, with
// whitespace allowed between pairs.
func appendHexBytea(dst, text []byte) ([]byte, error) {
	orig := len(dst)
	for i := 2; i < len(text); {
		c := text[i]
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			i++
			continue
		}
		hi, ok := unhex(c)
		if !ok {
			return dst[:orig], fmt.Errorf("decode bytea: invalid hex digit %q at offset %d", c, i)
		}
		if i+1 >= len(text) {
			return dst[:orig], fmt.Errorf("decode bytea: odd number of hex digits")
		}
		lo, ok := unhex(text[i+1])
		if !ok {
			return dst[:orig], fmt.Errorf("decode bytea: invalid hex digit %q at offset %d", text[i+1], i+1)
		}
		dst = append(dst, hi<<4|lo)
		i += 2
	}
	return dst, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendEscapeBytea mirrors byteain's escape format: a backslash starts
// either `\\` or a three-digit octal escape `\[0-3][0-7][0-7]`.
func appendEscapeBytea(dst, text []byte) ([]byte, error) {
	orig := len(dst)
	for i := 0; i < len(text); {
		c := text[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 < len(text) && text[i+1] == '\\' {
			dst = append(dst, '\\')
			i += 2
			continue
		}
		if i+3 < len(text) && isOctal(text[i+1], '3') && isOctal(text[i+2], '7') && isOctal(text[i+3], '7') {
			dst = append(dst, (text[i+1]-'0')<<6|(text[i+2]-'0')<<3|(text[i+3]-'0'))
			i += 4
			continue
		}
		return dst[:orig], fmt.Errorf("decode bytea: invalid escape at offset %d", i)
	}
	return dst, nil
}

func isOctal(c, hi byte) bool { return '0' <= c && c <= hi }
