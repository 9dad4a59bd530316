package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/kafkatest"
)

// TestTransactionHeaders: with --transaction-headers every record carries its
// transaction's commit LSN and xid and its 0-based place in the transaction, and a
// replayed record (here after a crash before the first checkpoint) carries the same.
func TestTransactionHeaders(t *testing.T) {
	e := newEnv(t, envOptions{kafka: kafkatest.Options{Partitions: 3}})
	args := []string{"--transaction-headers"}
	p := e.start(args...)
	p.waitLog(`"streaming"`, 30*time.Second)
	e.stopClean(p) // the slot exists; the next run's first save is the failpoint's
	// The events are written before the crashing run starts, so they are the first
	// thing it streams. Written after, an idle keepalive could bring its first save
	// (and the kill) before them: other databases' WAL moves the server's position.
	e.insertTx(event{ID: uuidFor(1), Type: "order", AggID: "a", Kind: "T", Payload: `{}`},
		event{ID: uuidFor(2), Type: "order", AggID: "b", Kind: "T", Payload: `{}`},
		event{ID: uuidFor(3), Type: "order", AggID: "c", Kind: "T", Payload: `{}`})
	crash := e.startEnv([]string{"PGOUTBOX_FAILPOINT=before-checkpoint=1"}, args...)
	crash.waitLog(`"streaming"`, 30*time.Second)
	e.consumeN(3, 30*time.Second)
	crash.wait(30 * time.Second) // dies at its first checkpoint save: nothing confirmed
	e.waitInactive(10 * time.Second)
	p = e.start(args...)
	p.waitLog(`"streaming"`, 30*time.Second)
	var lsn string
	recs := e.consume(10*time.Second, func(r []kafkatest.Record) bool { return len(r) >= 6 })
	if len(recs) < 6 {
		t.Fatalf("%d records, want each of 3 events twice (published, then replayed)", len(recs))
	}
	first := map[string]string{}
	for _, r := range recs {
		id := string(r.Headers["id"])
		h := fmt.Sprintf("lsn=%s xid=%s index=%s", r.Headers["pgoutbox.lsn"], r.Headers["pgoutbox.xid"], r.Headers["pgoutbox.index"])
		if lsn == "" {
			lsn = string(r.Headers["pgoutbox.lsn"])
		}
		if string(r.Headers["pgoutbox.lsn"]) != lsn || len(r.Headers["pgoutbox.xid"]) == 0 {
			t.Errorf("%s: %s, want the transaction's commit LSN %s and its xid", id, h, lsn)
		}
		if f, ok := first[id]; ok && f != h {
			t.Errorf("%s replayed with %s, first published with %s", id, h, f)
		}
		first[id] = h
	}
	for i, want := range []string{"0", "1", "2"} {
		if h := first[uuidFor(i+1)]; h == "" || h[len(h)-1:] != want {
			t.Errorf("event %d: %s, want index %s", i+1, h, want)
		}
	}
	var xmin string
	if err := e.admin.QueryRow(t.Context(), `SELECT xmin::text FROM outbox WHERE id = $1`, uuidFor(1)).Scan(&xmin); err != nil {
		t.Fatal(err)
	}
	if h := first[uuidFor(1)]; h == "" || !strings.Contains(h, "xid="+xmin+" ") {
		t.Errorf("header %s, want the inserting transaction's xid %s", h, xmin)
	}
	e.stopClean(p)
}
