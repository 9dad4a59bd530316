package outbox

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The functions in this file write JSON exactly as Kafka's JsonConverter does: it builds a
// Jackson tree and serializes it with a default ObjectMapper (JsonSerializer.java:70), so
// the bytes follow jackson-core's UTF8JsonGenerator: compact, no spaces, non-ASCII text as
// UTF-8, and only '"', '\\' and control characters escaped.

// appendJSONString appends s as a JSON string the way jackson-core escapes it:
// CharTypes.sOutputEscapes128 (CharTypes.java:159-176) gives '"' and '\\' a backslash,
// \b \t \f \n \r their short forms and every other character below 0x20 the generic
// escape, which UTF8JsonGenerator._writeGenericEscape writes as \u00XX with upper-case
// hex digits (CharTypes.HC, CharTypes.java:7). '/' and everything from 0x20 up, including
// U+2028, are written as they are — except characters beyond U+FFFF: a Java string holds
// them as two surrogates, and UTF8JsonGenerator._outputMultiByteChar writes each one as a
// \uXXXX escape (UTF8JsonGenerator.java:2196-2212) unless COMBINE_UNICODE_SURROGATES_IN_UTF8
// is enabled, which it is not by default (JsonGenerator.java:284). So 😀 is \uD83D\uDE00.
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	const hex = "0123456789ABCDEF"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0xF0 {
			continue
		}
		if c >= 0xF0 { // the lead byte of a four-byte sequence
			r, size := utf8.DecodeRuneInString(string(s[i:min(i+4, len(s))]))
			if size != 4 {
				continue // not valid UTF-8: left as it is
			}
			dst = append(dst, s[start:i]...)
			hi, lo := utf16.EncodeRune(r)
			for _, u := range [2]rune{hi, lo} {
				dst = append(dst, '\\', 'u', hex[u>>12&0xF], hex[u>>8&0xF], hex[u>>4&0xF], hex[u&0xF])
			}
			i += size - 1
			start = i + 1
			continue
		}
		dst = append(dst, s[start:i]...)
		start = i + 1
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONBase64 appends b as the JSON string Jackson writes for a binary node:
// BinaryNode.serialize uses the default Base64Variants.MIME_NO_LINEFEEDS, the standard
// alphabet with padding and no line breaks.
func appendJSONBase64(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendJavaDouble appends f as Java's Double.toString writes it (Jackson writes a
// double through NumberOutput.toString, which is Double.toString): the shortest decimal
// that reads back as f (the JDK 19+ algorithm), as plain digits with at least one
// fraction digit when 1e-3 <= |f| < 1e7, otherwise as d.dddE±n. NaN and the
// infinities are written as quoted strings, as Jackson's QUOTE_NON_NUMERIC_NUMBERS
// (enabled by default) does.
func appendJavaDouble(dst []byte, f float64) []byte {
	return appendJavaFloat(dst, f, 64)
}

// appendJavaFloat32 is appendJavaDouble for Java's Float.toString.
func appendJavaFloat32(dst []byte, f float32) []byte {
	return appendJavaFloat(dst, float64(f), 32)
}

func appendJavaFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	case f == 0:
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	// Shortest digits and decimal exponent: "d.ddde±x".
	var scratch [32]byte
	e := strconv.AppendFloat(scratch[:0], f, 'e', -1, bits)
	mant, exp, _ := strings.Cut(string(e), "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	if f >= 1e-3 && f < 1e7 {
		switch {
		case x < 0: // 0.00ddd
			dst = append(dst, "0."...)
			for i := 0; i < -x-1; i++ {
				dst = append(dst, '0')
			}
			return append(dst, digits...)
		case len(digits) > x+1: // dd.ddd
			dst = append(dst, digits[:x+1]...)
			dst = append(dst, '.')
			return append(dst, digits[x+1:]...)
		default: // ddd00.0
			dst = append(dst, digits...)
			for i := len(digits); i < x+1; i++ {
				dst = append(dst, '0')
			}
			return append(dst, ".0"...)
		}
	}
	dst = append(dst, digits[0], '.')
	if len(digits) > 1 {
		dst = append(dst, digits[1:]...)
	} else {
		dst = append(dst, '0')
	}
	dst = append(dst, 'E')
	return strconv.AppendInt(dst, int64(x), 10)
}
