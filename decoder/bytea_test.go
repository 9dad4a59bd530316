package decoder

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"
)

// encodeHexBytea and encodeEscapeBytea produce byteaout's two formats.
func encodeHexBytea(p []byte) []byte {
	return append([]byte(`\x`), hex.EncodeToString(p)...)
}

func encodeEscapeBytea(p []byte) []byte {
	var b bytes.Buffer
	for _, c := range p {
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c < 0x20 || c > 0x7e:
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.Bytes()
}

func TestDecodeBytea(t *testing.T) {
	tests := []struct {
		in   string
		want []byte
	}{
		{`\x`, []byte{}},
		{`\x00ff10`, []byte{0, 0xff, 0x10}},
		{`\xDEADbeef`, []byte{0xde, 0xad, 0xbe, 0xef}},
		{"\\x 0a\t1b\r\n", []byte{0x0a, 0x1b}}, // byteain allows whitespace between pairs
		{``, []byte{}},
		{`abc`, []byte("abc")},
		{`a\\b`, []byte(`a\b`)},
		{`\000\001\377x\\`, []byte{0, 1, 0xff, 'x', '\\'}},
	}
	for _, tt := range tests {
		got, err := DecodeBytea([]byte(tt.in))
		if err != nil || !bytes.Equal(got, tt.want) || got == nil {
			t.Errorf("DecodeBytea(%q) = %#v, %v; want %x", tt.in, got, err, tt.want)
		}
	}
}

func TestDecodeByteaMalformed(t *testing.T) {
	tests := []struct{ in, want string }{
		{`\x0`, "decode bytea: odd number of hex digits"},
		{`\x0g`, `decode bytea: invalid hex digit 'g' at offset 3`},
		{`\xzz`, `decode bytea: invalid hex digit 'z' at offset 2`},
		{`\x0 a`, `decode bytea: invalid hex digit ' ' at offset 3`}, // no whitespace inside a pair
		{`\`, "decode bytea: invalid escape at offset 0"},
		{`ab\`, "decode bytea: invalid escape at offset 2"},
		{`\400`, "decode bytea: invalid escape at offset 0"}, // first digit is at most 3
		{`\018`, "decode bytea: invalid escape at offset 0"},
		{`\01`, "decode bytea: invalid escape at offset 0"},
		{`\X00`, "decode bytea: invalid escape at offset 0"}, // only lowercase \x starts hex
	}
	for _, tt := range tests {
		got, err := DecodeBytea([]byte(tt.in))
		if err == nil || err.Error() != tt.want {
			t.Errorf("DecodeBytea(%q) = %x, %v; want error %q", tt.in, got, err, tt.want)
		}
	}
}

func TestByteaRoundTrip(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, enc := range [][]byte{encodeHexBytea(all), encodeEscapeBytea(all)} {
		got, err := DecodeBytea(enc)
		if err != nil || !bytes.Equal(got, all) {
			t.Errorf("DecodeBytea(%.20q...) = %x, %v", enc, got, err)
		}
	}
}

func TestAppendByteaKeepsDstOnError(t *testing.T) {
	dst := []byte("keep")
	got, err := AppendBytea(dst, []byte(`\x00zz`))
	if err == nil || string(got) != "keep" {
		t.Errorf("AppendBytea = %q, %v; want dst unchanged and an error", got, err)
	}
	got, err = AppendBytea(dst, []byte(`\x2121`))
	if err != nil || string(got) != "keep!!" {
		t.Errorf("AppendBytea = %q, %v", got, err)
	}
}
