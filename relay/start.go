package relay

import (
	"fmt"

	"github.com/pgoutbox/pgoutbox/checkpoint"
	"github.com/pgoutbox/pgoutbox/source"
)

// GapError means the slot cannot deliver every event after the checkpoint: the slot
// is missing, was re-created, lost its WAL, or the checkpoint belongs to another
// cluster or slot. pgoutbox refuses to start rather than skip events silently.
type GapError struct {
	Reason string
}

func (e *GapError) Error() string {
	return "gap between checkpoint and slot: " + e.Reason +
		"; pgoutbox will not skip events silently. Find what happened to the slot; republish events in the gap from the outbox table " +
		"(pgoutbox republish), then to start from the slot's position run once with --accept-gap"
}

// backfillPending is the checkpoint LSN that marks a slot created for a backfill
// that has not finished. No real position is 0/0.
const backfillPending = 0

// startFacts is what pgoutbox knows when it decides where to start: the slot, the
// checkpoint, and which server it talks to. Slot is read before the checkpoint: an
// instance that streams saves the checkpoint before each confirm, so a checkpoint
// read after the slot is never behind it, whereas the other order could see a
// confirm in between as a gap.
type startFacts struct {
	// ID is this server's identity: slot, system identifier, database, timeline.
	ID        checkpoint.Checkpoint
	Slot      source.Slot
	SlotFound bool
	CP        checkpoint.Checkpoint
	CPFound   bool

	AcceptGap   bool
	Backfill    bool
	ExactlyOnce bool
}

// startAction is what the relay does before streaming.
type startAction int

const (
	// startStream streams from the existing slot at plan.LSN.
	startStream startAction = iota
	// startCreate creates the slot (with a snapshot when plan.Backfill) and streams
	// from its consistent point, after the backfill if any.
	startCreate
	// startRecreate drops the slot and creates it again (a lost slot under
	// --accept-gap, or an unfinished backfill that starts over).
	startRecreate
	// startResumeBackfill: an unfinished exactly-once backfill whose Kafka
	// transaction may have committed; the checkpoint topic decides (see
	// resumeBackfill).
	startResumeBackfill
)

// startPlan is the decision of planStart.
type startPlan struct {
	Action startAction
	// LSN is where streaming starts for startStream, and the slot's consistent
	// point for startResumeBackfill.
	LSN source.LSN
	// Backfill runs --backfill in the new slot's snapshot.
	Backfill bool
	// Save: the checkpoint must be written before streaming (its position or
	// identity changed). Force: even over a newer position in a shared store
	// (--accept-gap, a backfill marker).
	Save, Force bool
	// Notes are log lines that explain the decision.
	Notes []string
}

// planStart decides where streaming starts: the newer of the checkpoint and the
// slot's confirmed_flush_lsn, after ruling out a gap. It is pure: the relay carries
// the plan out, and `pgoutbox status` reports the errors it returns.
func planStart(f startFacts) (startPlan, error) {
	id := f.ID
	if f.SlotFound {
		if err := source.CheckSlot(f.Slot, id.Database); err != nil {
			return startPlan{}, err
		}
		if f.Slot.Active {
			// Another process streams from it (another pgoutbox, or our own
			// previous connection not yet gone): its position is moving, so judge
			// nothing now and stand by.
			return startPlan{}, &source.ErrSlotActive{Msg: fmt.Sprintf("replication slot %q is active for PID %d", id.Slot, f.Slot.ActivePID)}
		}
	}
	cpOK := f.CPFound
	if cpOK {
		if err := sameOrigin(f.CP, id); err != nil {
			if !f.AcceptGap {
				return startPlan{}, err
			}
			cpOK = false // a foreign checkpoint says nothing about this slot
		}
	}
	if cpOK && f.CP.LSN == backfillPending {
		// The slot was created for a backfill that did not finish: nothing was
		// confirmed from it.
		switch {
		case !f.Backfill:
			return startPlan{}, permanent(fmt.Errorf("a --backfill on slot %q did not finish (the checkpoint says so); run again with --backfill to restart it", id.Slot))
		case f.SlotFound && f.ExactlyOnce:
			// A crash may have come after the backfill's Kafka transaction
			// committed but before the checkpoint was saved: the checkpoint
			// topic knows, once this instance has fenced any other.
			return startPlan{Action: startResumeBackfill, LSN: f.Slot.ConfirmedLSN}, nil
		case f.SlotFound:
			return startPlan{Action: startRecreate, Backfill: true, Save: true, Force: true,
				Notes: []string{"the previous backfill did not finish; starting it over with a new slot (rows it published are published again)"}}, nil
		}
		return startPlan{Action: startCreate, Backfill: true, Save: true, Force: true}, nil
	}

	var notes []string
	switch {
	case f.SlotFound && f.Slot.WALStatus == "lost":
		if !f.AcceptGap {
			return startPlan{}, &GapError{Reason: fmt.Sprintf("slot %q has wal_status 'lost': PostgreSQL removed WAL it still needed (max_slot_wal_keep_size), so events after %s are gone from WAL", id.Slot, f.Slot.ConfirmedLSN)}
		}
		return startPlan{Action: startRecreate, Backfill: false, Save: true, Force: true,
			Notes: []string{"--accept-gap: dropping the lost slot and creating it again; events in the gap are not published"}}, nil
	case !f.SlotFound && cpOK && !f.AcceptGap:
		return startPlan{}, &GapError{Reason: fmt.Sprintf("slot %q does not exist, but the checkpoint says events up to %s were published from it; events committed since may exist only in the dropped slot's WAL", id.Slot, f.CP.LSN)}
	case !f.SlotFound:
		return startPlan{Action: startCreate, Backfill: f.Backfill, Save: true, Force: true}, nil
	case cpOK && f.Slot.ConfirmedLSN > f.CP.LSN && !f.AcceptGap:
		return startPlan{}, &GapError{Reason: fmt.Sprintf("slot %q is confirmed up to %s, past the checkpoint at %s: the slot was re-created or advanced by another consumer, so events in between may never have been published (for several hosts, use --checkpoint-store postgres)", id.Slot, f.Slot.ConfirmedLSN, f.CP.LSN)}
	}
	if f.Backfill {
		notes = append(notes, "slot exists: --backfill applies only when pgoutbox creates the slot; streaming without it")
	}
	lsn := f.Slot.ConfirmedLSN
	if cpOK && f.CP.LSN > lsn {
		switch {
		case f.CP.Timeline != 0 && id.Timeline != 0 && f.CP.Timeline != id.Timeline:
			// The server was promoted since: WAL past the timeline switch differs
			// from what the checkpoint saw, and starting at the checkpoint would
			// skip the new timeline's transactions below it. The slot's position
			// belongs to this timeline; what lies between is published again.
			notes = append(notes, fmt.Sprintf("the checkpoint (%s, timeline %d) is ahead of the slot but from another timeline (now %d): starting from the slot's position %s; events in between are published again",
				f.CP.LSN, f.CP.Timeline, id.Timeline, lsn))
		default:
			// PostgreSQL 15 may lose a flush-only confirm in a crash; the
			// checkpoint remembers it.
			lsn = f.CP.LSN
		}
	}
	save := !cpOK || f.CP.LSN != lsn || f.CP.Timeline != id.Timeline
	return startPlan{Action: startStream, LSN: lsn, Save: save, Force: !cpOK || lsn < f.CP.LSN, Notes: notes}, nil
}

// sameOrigin reports a checkpoint that belongs to another cluster, database or slot.
func sameOrigin(cp, id checkpoint.Checkpoint) error {
	switch {
	case cp.Slot != id.Slot:
		return &GapError{Reason: fmt.Sprintf("the checkpoint belongs to slot %q, not %q", cp.Slot, id.Slot)}
	case cp.SystemID != "" && id.SystemID != "" && cp.SystemID != id.SystemID:
		return &GapError{Reason: fmt.Sprintf("the checkpoint is from another PostgreSQL cluster (system identifier %s, this server is %s): a restored or re-initialized server has different WAL positions", cp.SystemID, id.SystemID)}
	case cp.Database != "" && cp.Database != id.Database:
		return &GapError{Reason: fmt.Sprintf("the checkpoint is from database %q, not %q", cp.Database, id.Database)}
	}
	return nil
}

// skipRule is what the exactly-once checkpoint record says is already in Kafka:
// every transaction whose commit starts before Before, and the first Events events of
// the transaction whose final LSN is Final (one split across Kafka transactions).
type skipRule struct {
	Before source.LSN
	Final  source.LSN
	Events int
}

// planSkip decides what a checkpoint record read from Kafka means for this stream.
// A record from another cluster, database or slot is a gap unless --accept-gap, and
// then it is ignored: its positions mean nothing here, and skipping by them would
// drop new events.
func planSkip(rec checkpoint.Checkpoint, found bool, id checkpoint.Checkpoint, acceptGap bool) (skipRule, error) {
	if !found {
		return skipRule{}, nil
	}
	if err := sameOrigin(rec, id); err != nil {
		if !acceptGap {
			return skipRule{}, err
		}
		return skipRule{}, nil
	}
	return skipRule{Before: rec.LSN, Final: rec.PartialFinal, Events: rec.PartialEvents}, nil
}

// covers reports whether Kafka already has the index-th event (1-based) of the
// transaction with final LSN final.
func (s skipRule) covers(final source.LSN, index int) bool {
	return final < s.Before || final == s.Final && index <= s.Events
}
