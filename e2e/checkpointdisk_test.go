package e2e

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size on a new directory and unmounts it when the
// test ends, also when it fails; processes using it must be stopped by then (their
// cleanups, registered later, run first).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "mounting a tmpfs needs root"
	} else if _, err := exec.LookPath("mount"); err != nil {
		why = "no mount(8): " + err.Error()
	}
	if why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and the checkpoint disk tests cannot run: %s", why)
		}
		t.Skipf("skipping: %s", why)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full, and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			return path
		}
	}
}

// remount remounts the tmpfs on dir with opts (ro, rw).
func remount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v\n%s", opts, dir, err, out)
	}
}

// TestCheckpointDiskFailure: the checkpoint's file system fills up, or turns
// read-only. pgoutbox keeps running but confirms nothing it could not save: the
// slot and the checkpoint file stay where they were, reading pauses once the
// window of unconfirmed events is full, pgoutbox_checkpoint_errors_total grows and
// /readyz fails. Once the disk takes writes again it saves and confirms, and every
// event is in Kafka once.
func TestCheckpointDiskFailure(t *testing.T) {
	for _, c := range []struct {
		name        string
		fail, mend  func(t *testing.T, dir string)
		wantInError string
	}{
		{"full", func(t *testing.T, dir string) { fill(t, dir) },
			func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "filler")) }, "no space left on device"},
		{"read-only", func(t *testing.T, dir string) { remount(t, dir, "ro") },
			func(t *testing.T, dir string) { remount(t, dir, "rw") }, "read-only file system"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := mountTmpfs(t, "64k")
			e := newEnv(t, envOptions{})
			cpFile := filepath.Join(dir, "checkpoint")
			args := e.args("--metrics-addr", "127.0.0.1:0", "--max-in-flight", "50")
			args[slices.Index(args, "--checkpoint-file")+1] = cpFile
			p := e.startArgs(nil, args)
			p.waitLog(`"streaming"`, 30*time.Second)
			addr := metricsAddr(t, p)
			ids := e.insertRange(1, 10)
			e.waitIDs(ids, 30*time.Second)
			time.Sleep(time.Second) // several status intervals: the first events are confirmed
			before, err := os.ReadFile(cpFile)
			if err != nil {
				t.Fatal(err)
			}
			confirmed, _ := e.slotConfirmed()
			errs0 := metricValue(t, addr, "pgoutbox_checkpoint_errors_total")

			c.fail(t, dir)
			failedAt := time.Now()
			for i := 0; i < 20; i++ {
				ids = append(ids, e.insertRange(100+i*10, 10)...)
			}
			p.waitLog("cannot save the checkpoint; confirming nothing new until it can be saved", 30*time.Second)
			logged := time.Now()
			if line := firstLine(p.out.String(), "cannot save the checkpoint"); !strings.Contains(line, c.wantInError) || !strings.Contains(line, cpFile) {
				t.Errorf("the log line does not name the file and %q: %s", c.wantInError, line)
			}
			var notReady time.Time
			waitFor(t, 10*time.Second, "/readyz to fail", func() bool {
				if httpStatus(t, "http://"+addr+"/readyz") == http.StatusServiceUnavailable {
					notReady = time.Now()
					return true
				}
				return false
			})
			time.Sleep(3 * time.Second) // many status intervals: each tries to save
			errs := metricValue(t, addr, "pgoutbox_checkpoint_errors_total")
			if errs <= errs0+1 {
				t.Errorf("pgoutbox_checkpoint_errors_total went from %v to %v: it should count every failed save", errs0, errs)
			}
			// A save is retried with each status update (200ms), not in a busy loop.
			if most := 2*time.Since(failedAt).Seconds()/0.2 + 5; errs-errs0 > most {
				t.Errorf("%v failed saves in %s: pgoutbox retries the save in a busy loop", errs-errs0, time.Since(failedAt).Round(time.Millisecond))
			}
			after, _ := e.slotConfirmed()
			if after != confirmed {
				t.Errorf("the slot was confirmed from %s to %s although the checkpoint could not be saved", confirmed, after)
			}
			if now, err := os.ReadFile(cpFile); err != nil || !bytes.Equal(now, before) {
				t.Errorf("the checkpoint file changed while it could not be written (%v)", err)
			}
			delivered := len(e.consume(2*time.Second, nil))
			if delivered >= len(ids) {
				t.Errorf("all %d events were read and delivered with nothing confirmed: the window of unconfirmed events (50) did not hold", delivered)
			}
			if _, active := e.slotConfirmed(); !active {
				t.Errorf("the walsender went away while the checkpoint could not be saved")
			}
			p.mustBeRunning("while the checkpoint could not be saved")

			c.mend(t, dir)
			mended := time.Now()
			p.waitLog("the checkpoint is saved again", 30*time.Second)
			saved := time.Now()
			waitFor(t, 10*time.Second, "/readyz to recover", func() bool {
				return httpStatus(t, "http://"+addr+"/readyz") == http.StatusOK
			})
			e.waitIDs(ids, 30*time.Second)
			e.stopClean(p)
			if n := e.pendingChanges(); n != 0 {
				t.Errorf("%d events not confirmed after the checkpoint could be saved again and a clean stop", n)
			}
			recs := e.consume(2*time.Second, nil)
			unique := map[string]bool{}
			for _, r := range recs {
				unique[string(r.Headers["id"])] = true
			}
			t.Logf("checkpoint disk %s: %d events written, %d delivered (%d records, %d duplicates, %d lost); %d delivered while it failed; "+
				"logged %s and not ready %s after the failure, %v failed saves counted; saved again %s after the fix",
				c.name, len(ids), len(unique), len(recs), len(recs)-len(unique), len(ids)-len(unique), delivered,
				logged.Sub(failedAt).Round(time.Millisecond), notReady.Sub(failedAt).Round(time.Millisecond), errs-errs0,
				saved.Sub(mended).Round(time.Millisecond))
		})
	}
}

// TestCheckpointFileCorrupt: a checkpoint file truncated, emptied or overwritten
// with garbage stops pgoutbox with exit 1 and an error that names the file and the
// ways to recover; it never starts afresh, and it leaves the file and the slot
// alone. Each way the message gives then works: a backup (older than the slot, so
// pgoutbox reports a gap and needs --accept-gap once), or moving the file away (the
// slot's position is used).
func TestCheckpointFileCorrupt(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.waitIDs(e.insertRange(1, 5), 30*time.Second)
	e.stopClean(p)
	backup, err := os.ReadFile(e.checkpointPath())
	if err != nil {
		t.Fatal(err)
	}
	p = e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.waitIDs(e.insertRange(10, 5), 30*time.Second)
	e.stopClean(p)
	good, err := os.ReadFile(e.checkpointPath())
	if err != nil {
		t.Fatal(err)
	}
	slot := e.slotSnapshot()

	for _, c := range []struct{ name, content string }{
		{"truncated", string(good[:len(good)/2])},
		{"empty", ""},
		{"garbage", "\x00\x17garbage\xff not a checkpoint\n"},
		{"checksum", strings.Replace(string(good), `"slot":"`, `"slot":"x`, 1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(e.checkpointPath(), []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out := e.run(60*time.Second, "--accept-gap")
			if code != 1 {
				t.Errorf("exit code %d, want 1; output:\n%s", code, tail(out, 20))
			}
			line := firstLine(out, "load checkpoint")
			for _, want := range []string{e.checkpointPath(), "restore the file from a backup", "--accept-gap", "move it away", "slot's confirmed position"} {
				if !strings.Contains(line, want) {
					t.Errorf("the error does not say %q: %s", want, line)
				}
			}
			if strings.Contains(out, `"streaming"`) || strings.Contains(out, "replication slot created") {
				t.Errorf("pgoutbox started despite the corrupt checkpoint:\n%s", tail(out, 20))
			}
			if now, _ := os.ReadFile(e.checkpointPath()); string(now) != c.content {
				t.Errorf("pgoutbox rewrote the corrupt checkpoint file")
			}
			if now := e.slotSnapshot(); now != slot {
				t.Errorf("pgoutbox touched the slot: %s, was %s", now, slot)
			}
			t.Logf("%s: %s", c.name, line)
		})
	}

	// Recovery from a backup: the slot is ahead of it, which is a gap until
	// --accept-gap; nothing published after the backup comes again.
	if err := os.WriteFile(e.checkpointPath(), backup, 0o644); err != nil {
		t.Fatal(err)
	}
	e.refuses("past the checkpoint")
	p = e.start("--accept-gap")
	p.waitLog(`"streaming"`, 30*time.Second)
	e.waitIDs(e.insertRange(20, 5), 30*time.Second)
	e.stopClean(p)
	// Recovery by moving the file away: pgoutbox starts from the slot.
	if err := os.Rename(e.checkpointPath(), e.checkpointPath()+".corrupt"); err != nil {
		t.Fatal(err)
	}
	p = e.start()
	p.waitLog(`"streaming"`, 30*time.Second)
	e.waitIDs(e.insertRange(30, 5), 30*time.Second)
	e.stopClean(p)
	recs := e.consume(2*time.Second, nil)
	seen := map[string]int{}
	for _, r := range recs {
		seen[string(r.Headers["id"])]++
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("event %s published %d times across the recoveries", id, n)
		}
	}
	if len(seen) != 20 {
		t.Errorf("%d distinct events in Kafka, want 20", len(seen))
	}
}
