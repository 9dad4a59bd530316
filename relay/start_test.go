package relay

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/source"
)

// TestPlanStart: where streaming starts, for every combination of slot,
// checkpoint, identity and timeline that matters.
func TestPlanStart(t *testing.T) {
	id := checkpoint.Checkpoint{Slot: "s", SystemID: "1", Database: "db", Timeline: 1}
	slot := func(confirmed source.LSN) source.Slot {
		return source.Slot{Name: "s", Plugin: "pgoutput", Type: "logical", Database: "db", ConfirmedLSN: confirmed, WALStatus: "reserved"}
	}
	cp := func(lsn source.LSN) checkpoint.Checkpoint { c := id; c.LSN = lsn; return c }
	type want struct {
		action      startAction
		lsn         source.LSN
		backfill    bool
		save, force bool
		err         string // part of the error, "" for none
	}
	for _, c := range []struct {
		name string
		f    startFacts
		want want
	}{
		{"first start", startFacts{}, want{action: startCreate, save: true, force: true}},
		{"first start with backfill", startFacts{Backfill: true}, want{action: startCreate, backfill: true, save: true, force: true}},
		{"slot only", startFacts{Slot: slot(0x100), SlotFound: true}, want{action: startStream, lsn: 0x100, save: true, force: true}},
		{"agree", startFacts{Slot: slot(0x100), SlotFound: true, CP: cp(0x100), CPFound: true}, want{action: startStream, lsn: 0x100}},
		{"checkpoint ahead: a lost flush-only confirm", startFacts{Slot: slot(0x100), SlotFound: true, CP: cp(0x200), CPFound: true},
			want{action: startStream, lsn: 0x200}},
		{"checkpoint ahead from another timeline: the slot's position", startFacts{Slot: slot(0x100), SlotFound: true,
			CP: func() checkpoint.Checkpoint { c := cp(0x200); c.Timeline = 2; return c }(), CPFound: true},
			want{action: startStream, lsn: 0x100, save: true, force: true}},
		{"checkpoint of unknown timeline is trusted", startFacts{Slot: slot(0x100), SlotFound: true,
			CP: func() checkpoint.Checkpoint { c := cp(0x200); c.Timeline = 0; return c }(), CPFound: true},
			want{action: startStream, lsn: 0x200, save: true}},
		{"slot ahead: gap", startFacts{Slot: slot(0x300), SlotFound: true, CP: cp(0x200), CPFound: true}, want{err: "past the checkpoint"}},
		{"slot ahead, accept gap", startFacts{Slot: slot(0x300), SlotFound: true, CP: cp(0x200), CPFound: true, AcceptGap: true},
			want{action: startStream, lsn: 0x300, save: true}},
		{"slot dropped: gap", startFacts{CP: cp(0x200), CPFound: true}, want{err: "does not exist"}},
		{"slot dropped, accept gap", startFacts{CP: cp(0x200), CPFound: true, AcceptGap: true}, want{action: startCreate, save: true, force: true}},
		{"slot lost: gap", startFacts{Slot: func() source.Slot { s := slot(0x100); s.WALStatus = "lost"; return s }(), SlotFound: true, CP: cp(0x100), CPFound: true},
			want{err: "wal_status 'lost'"}},
		{"slot lost, accept gap", startFacts{Slot: func() source.Slot { s := slot(0x100); s.WALStatus = "lost"; return s }(), SlotFound: true, CP: cp(0x100), CPFound: true, AcceptGap: true},
			want{action: startRecreate, save: true, force: true}},
		{"another cluster: gap", startFacts{Slot: slot(0x100), SlotFound: true, CP: func() checkpoint.Checkpoint { c := cp(0x100); c.SystemID = "2"; return c }(), CPFound: true},
			want{err: "another PostgreSQL cluster"}},
		{"another cluster, accept gap: the checkpoint says nothing", startFacts{Slot: slot(0x100), SlotFound: true,
			CP: func() checkpoint.Checkpoint { c := cp(0x900); c.SystemID = "2"; return c }(), CPFound: true, AcceptGap: true},
			want{action: startStream, lsn: 0x100, save: true, force: true}},
		{"another slot: gap", startFacts{Slot: slot(0x100), SlotFound: true, CP: func() checkpoint.Checkpoint { c := cp(0x100); c.Slot = "t"; return c }(), CPFound: true},
			want{err: "belongs to slot"}},
		{"active: stand by", startFacts{Slot: func() source.Slot { s := slot(0x100); s.Active, s.ActivePID = true, 42; return s }(), SlotFound: true, CP: cp(0x50), CPFound: true},
			want{err: "active for PID 42"}},
		{"wrong plugin", startFacts{Slot: func() source.Slot { s := slot(0x100); s.Plugin = "wal2json"; return s }(), SlotFound: true}, want{err: "wal2json"}},
		{"unfinished backfill without --backfill", startFacts{Slot: slot(0x100), SlotFound: true, CP: cp(backfillPending), CPFound: true},
			want{err: "did not finish"}},
		{"unfinished backfill: start over", startFacts{Slot: slot(0x100), SlotFound: true, CP: cp(backfillPending), CPFound: true, Backfill: true},
			want{action: startRecreate, backfill: true, save: true, force: true}},
		{"unfinished exactly-once backfill: Kafka decides", startFacts{Slot: slot(0x100), SlotFound: true, CP: cp(backfillPending), CPFound: true, Backfill: true, ExactlyOnce: true},
			want{action: startResumeBackfill, lsn: 0x100}},
		{"existing slot ignores --backfill", startFacts{Slot: slot(0x100), SlotFound: true, CP: cp(0x100), CPFound: true, Backfill: true},
			want{action: startStream, lsn: 0x100}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := c.f
			f.ID = id
			p, err := planStart(f)
			if c.want.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.want.err) {
					t.Fatalf("plan %+v, error %v; want an error with %q", p, err, c.want.err)
				}
				var gap *GapError
				var active *source.ErrSlotActive
				if !IsPermanent(err) && !errors.As(err, &active) && !errors.As(err, &gap) {
					t.Fatalf("error %v must stop pgoutbox or stand it by", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{action: p.Action, lsn: p.LSN, backfill: p.Backfill, save: p.Save, force: p.Force}
			if got != c.want {
				t.Fatalf("plan %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestSameOrigin(t *testing.T) {
	id := checkpoint.Checkpoint{Slot: "s", SystemID: "1", Database: "db"}
	for _, c := range []struct {
		cp   checkpoint.Checkpoint
		want string
	}{
		{checkpoint.Checkpoint{Slot: "s", SystemID: "1", Database: "db"}, ""},
		{checkpoint.Checkpoint{Slot: "s"}, ""}, // identity unknown: not a gap
		{checkpoint.Checkpoint{Slot: "t", SystemID: "1", Database: "db"}, "slot"},
		{checkpoint.Checkpoint{Slot: "s", SystemID: "2", Database: "db"}, "another PostgreSQL cluster"},
		{checkpoint.Checkpoint{Slot: "s", SystemID: "1", Database: "other"}, "database"},
	} {
		err := sameOrigin(c.cp, id)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("sameOrigin(%+v) = %v, want %q", c.cp, err, c.want)
		}
		if err != nil && !IsPermanent(err) {
			t.Errorf("a gap must stop pgoutbox: %v", err)
		}
	}
}
