package checkpoint

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// crashHelperEnv makes the test binary act as the crash-test child: it saves
// checkpoints to the named file in a loop until killed.
const crashHelperEnv = "PGOUTBOX_CHECKPOINT_CRASH_FILE"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashHelperEnv); path != "" {
		if err := runCrashHelper(path); err != nil {
			fmt.Fprintln(os.Stderr, "crash helper:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testCheckpoint(lsn pglogrepl.LSN) Checkpoint {
	return Checkpoint{
		LSN:       lsn,
		Slot:      "pgoutbox",
		SystemID:  "7301234567890123456",
		Database:  "app",
		Timeline:  3,
		UpdatedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC),
	}
}

func assertSame(t *testing.T, got, want Checkpoint) {
	t.Helper()
	if got.LSN != want.LSN || got.Slot != want.Slot || got.SystemID != want.SystemID ||
		got.Database != want.Database || got.Timeline != want.Timeline || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("checkpoint = %+v, want %+v", got, want)
	}
}

func TestFileRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "checkpoint.json")
	s := NewFile(path)
	want := testCheckpoint(0x16B3748)
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "pgoutbox")
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, want)

	// A second store on the same file sees the same checkpoint.
	got, err = NewFile(path).Load(ctx, "pgoutbox")
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, want)

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"version":2`, `"timeline":3`, `"lsn":"0/16B3748"`, `"slot":"pgoutbox"`, `"updated_at":"2025-01-02T03:04:05.123456789Z"`, `"crc32c":"`} {
		if !bytes.Contains(data, []byte(field)) {
			t.Errorf("file %s lacks %s", data, field)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o600 != 0o600 || perm&0o133 != 0 {
		t.Errorf("file mode = %v, want rw-r--r-- (less umask)", perm)
	}
}

func TestFileLoadReturnsOtherSlot(t *testing.T) {
	ctx := context.Background()
	s := NewFile(filepath.Join(t.TempDir(), "cp"))
	want := testCheckpoint(42)
	want.Slot = "other"
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "pgoutbox")
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, want)
}

func TestFileRoundTripEscaping(t *testing.T) {
	ctx := context.Background()
	s := NewFile(filepath.Join(t.TempDir(), "cp"))
	want := testCheckpoint(pglogrepl.LSN(1<<64 - 1))
	want.Database = "a \"quoted\" \\ name\n\twith\x01controls, ünïcode ✓ and \u2028"
	want.SystemID = ""
	want.UpdatedAt = time.Date(2024, 2, 29, 23, 59, 59, 0, time.FixedZone("x", 3600))
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, want.Slot)
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, want)
}

func TestFileSaveZeroUpdatedAt(t *testing.T) {
	ctx := context.Background()
	s := NewFile(filepath.Join(t.TempDir(), "cp"))
	cp := testCheckpoint(1)
	cp.UpdatedAt = time.Time{}
	before := time.Now()
	if err := s.Save(ctx, cp); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	got, err := s.Load(ctx, cp.Slot)
	if err != nil {
		t.Fatal(err)
	}
	if got.UpdatedAt.Before(before.Truncate(time.Microsecond)) || got.UpdatedAt.After(after) {
		t.Errorf("UpdatedAt = %v, want between %v and %v", got.UpdatedAt, before, after)
	}
}

func TestFileSaveRejectsInvalid(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cp")
	s := NewFile(path)
	noSlot := testCheckpoint(1)
	noSlot.Slot = ""
	badUTF8 := testCheckpoint(1)
	badUTF8.Database = "a\xffb"
	for name, cp := range map[string]Checkpoint{"no slot": noSlot, "invalid UTF-8": badUTF8} {
		err := s.Save(ctx, cp)
		if err == nil || !strings.Contains(err.Error(), "save checkpoint file "+path) {
			t.Errorf("%s: Save error = %v, want one naming the file", name, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rejected Save created the file: %v", err)
	}
}

func TestFileLoadMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cp")
	_, err := NewFile(path).Load(context.Background(), "pgoutbox")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load error = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("Load error %q does not name %s", err, path)
	}
}

func TestFileLoadMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-mounted", "cp")
	_, err := NewFile(path).Load(context.Background(), "pgoutbox")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Load error = %v, want an error other than ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "directory") {
		t.Errorf("Load error %q does not name the file and its directory", err)
	}
}

// validFile returns the bytes FileStore writes for cp.
func validFile(t *testing.T, cp Checkpoint) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cp")
	if err := NewFile(path).Save(context.Background(), cp); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestFileLoadCorrupt(t *testing.T) {
	valid := string(validFile(t, testCheckpoint(0x16B3748)))
	crc := valid[strings.Index(valid, `"crc32c":"`)+len(`"crc32c":"`):][:8]
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{"empty", "", "file is empty"},
		{"blank", " \n", "file is empty"},
		{"not JSON", "0/16B3748\n", "not a JSON object"},
		{"truncated", valid[:len(valid)/2], "invalid JSON"},
		{"JSON array", "[1,2]", "not a JSON object"},
		{"no version", strings.Replace(valid, `"version":2,`, ``, 1), "no version field"},
		{"unknown version", strings.Replace(valid, `"version":2`, `"version":3`, 1), "unsupported checkpoint file version 3"},
		{"bad checksum", strings.Replace(valid, "0/16B3748", "0/16B3749", 1), "checksum mismatch"},
		{"bad slot", strings.Replace(valid, `"pgoutbox"`, `"pgoutbix"`, 1), "checksum mismatch"},
		{"no checksum", strings.Replace(valid, `,"crc32c":"`+crc+`"`, ``, 1), "no crc32c field"},
		{"short checksum", strings.Replace(valid, crc, crc[:7], 1), "not 8 hex digits"},
		{"unknown field", strings.Replace(valid, `{"version":2,`, `{"version":2,"extra":true,`, 1), "unknown field"},
		{"trailing garbage", valid + "{}", "invalid JSON"},
		{"wrong type", strings.Replace(valid, `"slot":"pgoutbox"`, `"slot":7`, 1), "corrupt file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cp")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := NewFile(path).Load(context.Background(), "pgoutbox")
			if err == nil {
				t.Fatalf("Load of %q succeeded", tt.content)
			}
			t.Log(err)
			if errors.Is(err, ErrNotFound) {
				t.Fatalf("Load error %v is ErrNotFound; a damaged file must not look absent", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error = %q, want it to name %s and say %q", err, path, tt.want)
			}
		})
	}
}

// TestFileLoadEveryTruncation checks that no torn prefix of a valid file loads.
func TestFileLoadEveryTruncation(t *testing.T) {
	valid := validFile(t, testCheckpoint(0x16B3748))
	path := filepath.Join(t.TempDir(), "cp")
	s := NewFile(path)
	// Dropping only the final newline leaves a complete document.
	for n := 0; n < len(valid)-1; n++ {
		if err := os.WriteFile(path, valid[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if cp, err := s.Load(context.Background(), "pgoutbox"); err == nil {
			t.Fatalf("Load of the first %d of %d bytes succeeded: %+v", n, len(valid), cp)
		}
	}
}

// TestFileLoadEveryByteChanged checks that changing any single byte either fails
// Load or leaves the checkpoint unchanged (e.g. an upper-case checksum digit).
func TestFileLoadEveryByteChanged(t *testing.T) {
	want := testCheckpoint(0x16B3748)
	valid := validFile(t, want)
	path := filepath.Join(t.TempDir(), "cp")
	s := NewFile(path)
	for i := range valid {
		for _, c := range []byte{'0', '1', '7', 'A', 'a', 'F', 'z', '"', ' ', '}', 0} {
			if valid[i] == c {
				continue
			}
			data := bytes.Clone(valid)
			data[i] = c
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := s.Load(context.Background(), "pgoutbox")
			if err != nil {
				continue
			}
			if got.LSN != want.LSN || got.Slot != want.Slot || got.SystemID != want.SystemID ||
				got.Database != want.Database || got.Timeline != want.Timeline || !got.UpdatedAt.Equal(want.UpdatedAt) {
				t.Errorf("file with byte %d set to %q loaded as %+v", i, c, got)
			}
		}
	}
}

func TestFileSaveReplaces(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := NewFile(filepath.Join(dir, "cp"))
	for lsn := pglogrepl.LSN(1); lsn <= 5; lsn++ {
		if err := s.Save(ctx, testCheckpoint(lsn<<32|lsn)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Load(ctx, "pgoutbox")
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, testCheckpoint(5<<32|5))
	assertDirHolds(t, dir, "cp")
}

// assertDirHolds fails unless dir holds exactly the named entries.
func assertDirHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("directory holds %v, want %v", got, names)
	}
}

func TestFileSaveOverLeftoverTemp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "cp")
	s := NewFile(path)
	if err := s.Save(ctx, testCheckpoint(1)); err != nil {
		t.Fatal(err)
	}
	// A crash between writing the temporary file and the rename leaves it behind.
	if err := os.WriteFile(path+".tmp", []byte(`{"version":1,"lsn":"0/9`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "pgoutbox")
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, testCheckpoint(1))
	if err := s.Save(ctx, testCheckpoint(2)); err != nil {
		t.Fatal(err)
	}
	got, err = s.Load(ctx, "pgoutbox")
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, testCheckpoint(2))
	assertDirHolds(t, dir, "cp")
}

// TestFileSaveParentIsFile uses a parent that is a regular file to make Save fail,
// since tests run as root and permissions do not stop root.
func TestFileSaveParentIsFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	parent := filepath.Join(dir, "file")
	if err := os.WriteFile(parent, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(parent, "cp")
	s := NewFile(path)
	err := s.Save(ctx, testCheckpoint(1))
	if err == nil {
		t.Fatal("Save succeeded under a regular file")
	}
	if !strings.HasPrefix(err.Error(), "save checkpoint file "+path+": ") || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Save error = %q, want it to name %s and say why", err, path)
	}
	if _, err := s.Load(ctx, "pgoutbox"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Load error = %v, want an error other than ErrNotFound", err)
	}
	assertDirHolds(t, dir, "file")
}

func TestFileSaveMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing", "cp")
	err := NewFile(path).Save(context.Background(), testCheckpoint(1))
	if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Save error = %v, want a not-exist error naming %s", err, path)
	}
	assertDirHolds(t, dir)
}

// TestFileSaveFailureKeepsOld makes the temporary file impossible to create (a
// directory is in its place) and checks that the old checkpoint survives.
func TestFileSaveFailureKeepsOld(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "cp")
	s := NewFile(path)
	if err := s.Save(ctx, testCheckpoint(1)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path+".tmp", "blocker"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := s.Save(ctx, testCheckpoint(2))
	if err == nil || !strings.HasPrefix(err.Error(), "save checkpoint file "+path+": ") {
		t.Fatalf("Save error = %v, want one naming %s", err, path)
	}
	got, err := s.Load(ctx, "pgoutbox")
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, testCheckpoint(1))
	if _, err := os.Stat(filepath.Join(path+".tmp", "blocker")); err != nil {
		t.Errorf("failed Save removed what was in the way: %v", err)
	}
}

// TestFileSaveRenameFailureCleansUp makes the rename fail (the target is a
// non-empty directory) and checks that the temporary file is removed.
func TestFileSaveRenameFailureCleansUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cp")
	if err := os.MkdirAll(filepath.Join(path, "blocker"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := NewFile(path).Save(context.Background(), testCheckpoint(1))
	if err == nil || !strings.HasPrefix(err.Error(), "save checkpoint file "+path+": ") {
		t.Fatalf("Save error = %v, want one naming %s", err, path)
	}
	assertDirHolds(t, dir, "cp")
}

func TestFileDescribe(t *testing.T) {
	t.Chdir(t.TempDir())
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	s := NewFile("state/../cp.json")
	if got, want := s.Describe(), "file "+filepath.Join(wd, "cp.json"); got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
}

func TestAppendLSN(t *testing.T) {
	for _, lsn := range []pglogrepl.LSN{0, 1, 0x16B3748, 0xA_0000_0000, 0xFFFFFFFF_FFFFFFFF, 0x1_0000_000F} {
		if got, want := string(appendLSN(nil, lsn)), lsn.String(); got != want {
			t.Errorf("appendLSN(%d) = %s, want %s", uint64(lsn), got, want)
		}
	}
}

func TestAppendFileDoesNotAllocate(t *testing.T) {
	cp := testCheckpoint(0x16B3748)
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = appendFile(buf[:0], cp) }); n != 0 {
		t.Errorf("appendFile allocates %v times per call, want 0", n)
	}
}

// TestFileCrashConsistency kills a process that saves checkpoints in a loop at
// random moments; after every kill the file must hold one of the saved LSNs.
func TestFileCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("starts subprocesses")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "cp")
	s := NewFile(path)
	var last pglogrepl.LSN // last LSN the child reported as saved
	tornRounds := 0        // rounds killed during a Save, after its temporary file was created
	for round := 0; round < 20; round++ {
		reported, err := runAndKill(path, time.Duration(rand.IntN(30_000))*time.Microsecond)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if reported < last {
			t.Fatalf("round %d: child reported %s after %s", round, reported, last)
		}
		cp, err := s.Load(context.Background(), "pgoutbox")
		if err != nil {
			t.Fatalf("round %d: Load after kill: %v", round, err)
		}
		// The child may have finished the next Save without reporting it.
		if cp.LSN != reported && cp.LSN != reported+1 {
			t.Fatalf("round %d: loaded LSN %s, want %s or the one after", round, cp.LSN, reported)
		}
		if _, err := os.Stat(path + ".tmp"); err == nil {
			tornRounds++
		}
		last = cp.LSN
	}
	t.Logf("%d rounds, %d checkpoints saved, %d kills left a temporary file", 20, last, tornRounds)
	if last < 20 {
		t.Errorf("only %d checkpoints saved in 20 rounds", last)
	}
}

// runAndKill starts the crash helper, waits until it has saved at least once, kills
// it with SIGKILL after delay and returns the last LSN it reported as saved.
func runAndKill(path string, delay time.Duration) (pglogrepl.LSN, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	lines := make(chan pglogrepl.LSN)
	done := make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			v, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				continue
			}
			lines <- pglogrepl.LSN(v)
		}
		done <- sc.Err()
	}()

	reported, ok := <-lines
	if !ok {
		cmd.Wait()
		killed = true
		return 0, fmt.Errorf("helper exited before saving: %s", stderr.String())
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for waiting := true; waiting; {
		select {
		case v, ok := <-lines:
			if !ok {
				return 0, fmt.Errorf("helper stopped early: %s", stderr.String())
			}
			reported = v
		case <-timer.C:
			waiting = false
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		return 0, err
	}
	for v := range lines {
		reported = v
	}
	if err := <-done; err != nil {
		return 0, err
	}
	err = cmd.Wait()
	killed = true
	if !strings.Contains(fmt.Sprint(err), "killed") {
		return 0, fmt.Errorf("helper exit = %v, want killed; stderr: %s", err, stderr.String())
	}
	return reported, nil
}

// runCrashHelper saves checkpoints with increasing LSNs, continuing after the one
// already in the file, and prints each LSN once its Save has returned.
func runCrashHelper(path string) error {
	ctx := context.Background()
	s := NewFile(path)
	cp, err := s.Load(ctx, "pgoutbox")
	switch {
	case errors.Is(err, ErrNotFound):
		cp = testCheckpoint(0)
	case err != nil:
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	for lsn := cp.LSN + 1; ; lsn++ {
		if err := s.Save(ctx, testCheckpoint(lsn)); err != nil {
			return err
		}
		fmt.Fprintln(w, uint64(lsn))
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// TestFileLoadVersion1: a file written before timelines were stored still loads,
// with the timeline unknown (0).
func TestFileLoadVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp")
	v1 := `{"version":1,"lsn":"0/16B3748","slot":"pgoutbox","system_id":"7301234567890123456","database":"app","updated_at":"2025-01-02T03:04:05.123456789Z"}`
	sum := crc32.Checksum([]byte(v1), castagnoli)
	data := fmt.Sprintf("%s,\"crc32c\":\"%08x\"}\n", v1[:len(v1)-1], sum)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := NewFile(path).Load(context.Background(), "pgoutbox")
	if err != nil {
		t.Fatalf("load a version 1 file: %v", err)
	}
	want := testCheckpoint(0x16B3748)
	want.Timeline = 0
	assertSame(t, got, want)
	// A version 1 file with a timeline, or a version 2 one without, is damaged.
	for _, bad := range []string{
		strings.Replace(data, `"database":"app"`, `"database":"app","timeline":1`, 1),
		strings.Replace(string(validFile(t, testCheckpoint(1))), `,"timeline":3`, "", 1),
	} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := NewFile(path).Load(context.Background(), "pgoutbox"); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("load %s: error %v, want a corrupt-file error", bad, err)
		}
	}
}
