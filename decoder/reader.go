package decoder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// reader walks one message with bounds checks. Its error is sticky: after the
// first failure every read returns zero, so a decoder can read a group of
// fields and check once. Errors name the field and its offset so a bad
// message can be located in a hex dump; short reads wrap io.ErrUnexpectedEOF.
type reader struct {
	buf []byte
	off int
	err error
}

func (r *reader) remaining() int { return len(r.buf) - r.off }

// short records that what, starting at the current offset, needs n bytes.
func (r *reader) short(what string, n int) {
	if r.err == nil {
		r.err = fmt.Errorf("read %s at offset %d: need %d bytes, have %d: %w",
			what, r.off, n, r.remaining(), io.ErrUnexpectedEOF)
	}
}

// fail records a malformed field at the current offset.
func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format+" (offset %d)", append(args, r.off)...)
	}
}

func (r *reader) u8(what string) byte {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 1 {
		r.short(what, 1)
		return 0
	}
	v := r.buf[r.off]
	r.off++
	return v
}

func (r *reader) u16(what string) uint16 {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 2 {
		r.short(what, 2)
		return 0
	}
	v := binary.BigEndian.Uint16(r.buf[r.off:])
	r.off += 2
	return v
}

func (r *reader) u32(what string) uint32 {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 4 {
		r.short(what, 4)
		return 0
	}
	v := binary.BigEndian.Uint32(r.buf[r.off:])
	r.off += 4
	return v
}

func (r *reader) u64(what string) uint64 {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 8 {
		r.short(what, 8)
		return 0
	}
	v := binary.BigEndian.Uint64(r.buf[r.off:])
	r.off += 8
	return v
}

// length reads an Int32 byte count followed by that many bytes.
func (r *reader) length(what string) []byte {
	if r.err != nil {
		return nil
	}
	start := r.off
	n := int32(r.u32(what))
	if r.err != nil {
		return nil
	}
	if n < 0 {
		r.off = start
		r.fail("read %s: negative length %d", what, n)
		return nil
	}
	return r.bytes(what, int(n))
}

func (r *reader) bytes(what string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if r.remaining() < n {
		r.short(what, n)
		return nil
	}
	v := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// cstring reads a NUL-terminated string and returns it without the NUL.
func (r *reader) cstring(what string) []byte {
	if r.err != nil {
		return nil
	}
	end := bytes.IndexByte(r.buf[r.off:], 0)
	if end < 0 {
		r.err = fmt.Errorf("read %s at offset %d: no NUL terminator in %d bytes: %w",
			what, r.off, r.remaining(), io.ErrUnexpectedEOF)
		return nil
	}
	v := r.buf[r.off : r.off+end : r.off+end]
	r.off += end + 1
	return v
}

// finish reports bytes left after the last field: they mean the message is
// not what we think it is.
func (r *reader) finish() error {
	if r.err != nil {
		return r.err
	}
	if n := r.remaining(); n > 0 {
		return fmt.Errorf("%d trailing bytes at offset %d", n, r.off)
	}
	return nil
}

// pgEpoch is 2000-01-01 00:00:00 UTC in Unix seconds.
const pgEpoch = 946684800

// pgTime converts PostgreSQL's TimestampTz (microseconds since 2000-01-01
// UTC) without overflow for any input.
func pgTime(us int64) time.Time {
	return time.Unix(pgEpoch+us/1e6, (us%1e6)*1e3).UTC()
}
