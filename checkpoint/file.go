package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
)

// fileVersion is the format version FileStore writes. It reads it and version 1,
// which had no timeline; a reader must refuse a newer version rather than guess at
// its meaning.
const fileVersion = 2

// maxFileSize bounds what Load reads, so a path that points at the wrong (large)
// file fails fast instead of being read into memory.
const maxFileSize = 64 << 10

// castagnoli is the CRC32C table; read-only after initialisation.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FileStore keeps one checkpoint in a local file.
//
// The file belongs to one pgoutbox instance and holds a single checkpoint: Load
// returns it whatever slot it was saved for, and the caller compares Slot (a file
// that names another slot is a configuration error, not "no checkpoint").
//
// The file is a small JSON document that a person can read:
//
//	{"version":2,"lsn":"0/16B3748","slot":"pgoutbox","system_id":"7301...","database":"app","timeline":1,"updated_at":"2025-01-02T03:04:05.123456789Z","crc32c":"1a2b3c4d"}
//
// crc32c is the CRC32C of the same document without the crc32c field, in the field
// order above and without spaces. Version 1 files have no timeline field. It lets Load tell a damaged file from a valid one:
// a damaged file is an error, never "no checkpoint", because starting without the
// checkpoint could replay or skip events.
//
// Save replaces the file atomically (write a temporary file next to it, fsync,
// rename, fsync the directory), so a crash leaves either the old or the new
// checkpoint. The temporary file is the path with ".tmp" appended; one left behind
// by a crash is overwritten by the next Save and ignored by Load. Because of that
// fixed name only one FileStore may write a given path; within one process Save
// calls are serialised, and Load may run at any time. The file is created with
// mode 0o644 (less the umask).
//
// Save does not create the parent directory: a missing directory usually means a
// volume that is not mounted or a typo, and creating it would hide the checkpoint
// where the next start does not look. Load reports a missing directory as an error
// for the same reason.
type FileStore struct {
	path string
	tmp  string
	dir  string

	mu  sync.Mutex
	buf []byte // reused by Save so a confirm does not allocate the document
}

// NewFile returns a store for the checkpoint file at path. A relative path is made
// absolute now, so a later change of working directory does not move the file.
func NewFile(path string) *FileStore {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	} else {
		path = filepath.Clean(path)
	}
	return &FileStore{
		path: path,
		tmp:  path + ".tmp",
		dir:  filepath.Dir(path),
		buf:  make([]byte, 0, 512),
	}
}

// Describe returns "file <absolute path>".
func (s *FileStore) Describe() string {
	return "file " + s.path
}

// Load returns the checkpoint stored in the file, even if it was saved for a slot
// other than slot; the caller must compare Checkpoint.Slot. It returns an error
// wrapping ErrNotFound when the file does not exist (its directory does), and an
// error naming the path when the file is unreadable, damaged or of an unknown
// version.
func (s *FileStore) Load(ctx context.Context, slot string) (Checkpoint, error) {
	data, err := s.read()
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(s.dir); derr != nil {
			return Checkpoint{}, fmt.Errorf("load checkpoint file %s: directory: %w", s.path, derr)
		}
		return Checkpoint{}, fmt.Errorf("load checkpoint file %s: %w", s.path, ErrNotFound)
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("load checkpoint file %s: %w", s.path, err)
	}
	cp, err := decodeFile(data)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("load checkpoint file %s: %w", s.path, err)
	}
	return cp, nil
}

func (s *FileStore) read() ([]byte, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes; not a checkpoint file", maxFileSize)
	}
	return data, nil
}

// Force is Save: the file has one writer, so there is no newer position of another
// instance to protect.
func (s *FileStore) Force(ctx context.Context, cp Checkpoint) error { return s.Save(ctx, cp) }

// Save durably replaces the file with cp. A zero UpdatedAt is stored as the time of
// the Save. Slot, SystemID and Database must be valid UTF-8 so that they read back
// unchanged. A partial position (PartialEvents) is not a local checkpoint and is
// refused.
func (s *FileStore) Save(ctx context.Context, cp Checkpoint) error {
	if err := checkSave(cp); err != nil {
		return fmt.Errorf("save checkpoint file %s: %w", s.path, err)
	}
	if cp.UpdatedAt.IsZero() {
		cp.UpdatedAt = time.Now()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = appendFile(s.buf[:0], cp)
	if err := s.replace(s.buf); err != nil {
		return fmt.Errorf("save checkpoint file %s: %w", s.path, err)
	}
	return nil
}

// replace writes data to the temporary file and renames it over the target.
func (s *FileStore) replace(data []byte) (err error) {
	f, err := os.OpenFile(s.tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(s.tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(s.tmp, s.path); err != nil {
		return err
	}
	// The rename is durable only once the directory entry is on disk.
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return d.Close()
}

// checkSave rejects checkpoints that would not read back as saved.
func checkSave(cp Checkpoint) error {
	if cp.Slot == "" {
		return errors.New("checkpoint has no slot")
	}
	if cp.PartialEvents != 0 {
		return errors.New("a partial position is not a local checkpoint")
	}
	for _, f := range [...]struct{ name, v string }{
		{"slot", cp.Slot}, {"system_id", cp.SystemID}, {"database", cp.Database},
	} {
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s %q is not valid UTF-8", f.name, f.v)
		}
	}
	return nil
}

// fileDoc is the decoded file. LSN and UpdatedAt stay strings so the checksum is
// computed over exactly what was written.
type fileDoc struct {
	Version   int    `json:"version"`
	LSN       string `json:"lsn"`
	Slot      string `json:"slot"`
	SystemID  string `json:"system_id"`
	Database  string `json:"database"`
	Timeline  *int32 `json:"timeline"`
	UpdatedAt string `json:"updated_at"`
	CRC32C    string `json:"crc32c"`
}

// appendFile appends the file contents for cp: the canonical document with the
// crc32c field added before its closing brace, and a newline.
func appendFile(b []byte, cp Checkpoint) []byte {
	start := len(b)
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, fileVersion, 10)
	b = append(b, `,"lsn":"`...)
	b = appendLSN(b, cp.LSN)
	b = append(b, `","slot":`...)
	b = appendString(b, cp.Slot)
	b = append(b, `,"system_id":`...)
	b = appendString(b, cp.SystemID)
	b = append(b, `,"database":`...)
	b = appendString(b, cp.Database)
	b = append(b, `,"timeline":`...)
	b = strconv.AppendInt(b, int64(cp.Timeline), 10)
	b = append(b, `,"updated_at":"`...)
	b = cp.UpdatedAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	sum := crc32.Checksum(b[start:], castagnoli)
	b = b[:len(b)-1] // reopen the object for the checksum field
	b = append(b, `,"crc32c":"`...)
	b = appendHex32(b, sum)
	b = append(b, "\"}\n"...)
	return b
}

// appendCanonical appends the document that the checksum covers, built from the
// decoded strings so that it matches what appendFile wrote byte for byte.
func appendCanonical(b []byte, d *fileDoc) []byte {
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, int64(d.Version), 10)
	b = append(b, `,"lsn":`...)
	b = appendString(b, d.LSN)
	b = append(b, `,"slot":`...)
	b = appendString(b, d.Slot)
	b = append(b, `,"system_id":`...)
	b = appendString(b, d.SystemID)
	b = append(b, `,"database":`...)
	b = appendString(b, d.Database)
	if d.Timeline != nil {
		b = append(b, `,"timeline":`...)
		b = strconv.AppendInt(b, int64(*d.Timeline), 10)
	}
	b = append(b, `,"updated_at":`...)
	b = appendString(b, d.UpdatedAt)
	return append(b, '}')
}

// decodeFile parses and verifies the file contents.
func decodeFile(data []byte) (Checkpoint, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return Checkpoint{}, errors.New("file is empty; not a checkpoint file")
	}
	if trimmed[0] != '{' {
		return Checkpoint{}, errors.New("corrupt file: not a JSON object")
	}
	// Read the version first: another version may not share this layout.
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return Checkpoint{}, fmt.Errorf("corrupt file: invalid JSON: %w", err)
	}
	if v.Version == nil {
		return Checkpoint{}, errors.New("corrupt file: no version field")
	}
	if *v.Version != fileVersion && *v.Version != 1 {
		return Checkpoint{}, fmt.Errorf("unsupported checkpoint file version %d (this pgoutbox reads versions 1 and %d)", *v.Version, fileVersion)
	}

	var d fileDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Checkpoint{}, fmt.Errorf("corrupt file: %w", err)
	}
	if d.CRC32C == "" {
		return Checkpoint{}, errors.New("corrupt file: no crc32c field")
	}
	if (d.Timeline != nil) != (d.Version >= 2) {
		return Checkpoint{}, fmt.Errorf("corrupt file: version %d with the timeline field present: %v", d.Version, d.Timeline != nil)
	}
	want, err := strconv.ParseUint(d.CRC32C, 16, 32)
	if err != nil || len(d.CRC32C) != 8 {
		return Checkpoint{}, fmt.Errorf("corrupt file: crc32c %q is not 8 hex digits", d.CRC32C)
	}
	if got := crc32.Checksum(appendCanonical(nil, &d), castagnoli); got != uint32(want) {
		return Checkpoint{}, fmt.Errorf("corrupt file: checksum mismatch (crc32c field %s, content %08x)", d.CRC32C, got)
	}

	lsn, err := pglogrepl.ParseLSN(d.LSN)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("corrupt file: lsn %q: %w", d.LSN, err)
	}
	if d.Slot == "" {
		return Checkpoint{}, errors.New("corrupt file: no slot")
	}
	at, err := time.Parse(time.RFC3339Nano, d.UpdatedAt)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("corrupt file: updated_at: %w", err)
	}
	cp := Checkpoint{
		LSN:       lsn,
		Slot:      d.Slot,
		SystemID:  d.SystemID,
		Database:  d.Database,
		UpdatedAt: at,
	}
	if d.Timeline != nil {
		cp.Timeline = *d.Timeline
	}
	return cp, nil
}

const upperHex = "0123456789ABCDEF"

// appendLSN appends lsn in PostgreSQL's text form (%X/%X), like pglogrepl.LSN.String
// but without allocating.
func appendLSN(b []byte, lsn pglogrepl.LSN) []byte {
	b = appendUpperHex(b, uint32(lsn>>32))
	b = append(b, '/')
	return appendUpperHex(b, uint32(lsn))
}

func appendUpperHex(b []byte, v uint32) []byte {
	var tmp [8]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = upperHex[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// appendHex32 appends v as exactly eight lowercase hex digits.
func appendHex32(b []byte, v uint32) []byte {
	const lowerHex = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, lowerHex[(v>>uint(shift))&0xF])
	}
	return b
}

// appendString appends s as a JSON string. It escapes only what JSON requires, so
// encoding/json decodes it back to s for any valid UTF-8 s.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', upperHex[c>>4], upperHex[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
