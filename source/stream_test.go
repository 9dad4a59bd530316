package source

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgEpoch is where the replication protocol's timestamps count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func xlogData(start, end LSN, at time.Time, payload string) []byte {
	b := []byte{'w'}
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	b = binary.BigEndian.AppendUint64(b, uint64(at.Sub(pgEpoch).Microseconds()))
	return append(b, payload...)
}

func keepalive(end LSN, at time.Time, reply bool) []byte {
	b := []byte{'k'}
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	b = binary.BigEndian.AppendUint64(b, uint64(at.Sub(pgEpoch).Microseconds()))
	if reply {
		return append(b, 1)
	}
	return append(b, 0)
}

// TestStreamParse: the two CopyData messages of a logical replication stream, built
// byte by byte as walsender.c writes them, and what is not one.
func TestStreamParse(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 123000, time.UTC)
	var s Stream
	m, err := s.parse(xlogData(0x16B3748, 0x16B3800, at, "Bpayload"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Keepalive || m.WALStart != 0x16B3748 || m.ServerWALEnd != 0x16B3800 || !m.ServerTime.Equal(at) || string(m.Data) != "Bpayload" {
		t.Errorf("XLogData parsed as %+v", *m)
	}
	m, err = s.parse(keepalive(0x16B3900, at, true))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Keepalive || m.ServerWALEnd != 0x16B3900 || !m.ReplyRequested || !m.ServerTime.Equal(at) || m.Data != nil || m.WALStart != 0 {
		t.Errorf("keepalive parsed as %+v (the previous message must not leak into it)", *m)
	}
	if m, err = s.parse(keepalive(0x16B3900, at, false)); err != nil || m.ReplyRequested {
		t.Errorf("keepalive without reply request: %+v, %v", m, err)
	}
	for name, data := range map[string][]byte{
		"empty":               {},
		"unknown type":        []byte("x1234"),
		"truncated XLogData":  xlogData(1, 2, at, "")[:10],
		"truncated keepalive": keepalive(1, at, false)[:9],
	} {
		if m, err := s.parse(data); err == nil {
			t.Errorf("%s: parsed as %+v, want an error", name, *m)
		}
	}
}

// TestStreamErrorPublication: the walsender's "publication does not exist" while
// decoding (a publication created after the slot's start) is a set-up error that
// says what to do; other errors pass through with their SQLSTATE.
func TestStreamErrorPublication(t *testing.T) {
	err := streamError(&pgconn.PgError{Code: "42704", Message: `publication "pgoutbox" does not exist`})
	if !IsSetup(err) || !strings.Contains(err.Error(), "re-create the slot") {
		t.Errorf("publication error: %v (setup %v)", err, IsSetup(err))
	}
	other := &pgconn.PgError{Code: "XX000", Message: "could not read WAL"}
	err = streamError(other)
	var pg *pgconn.PgError
	if IsSetup(err) || !errors.As(err, &pg) || pg.Code != "XX000" {
		t.Errorf("other error: %v", err)
	}
}
