package tracker

import "github.com/jackc/pglogrepl"

// txn is one transaction of the ring.
type txn struct {
	// final is BeginMessage.FinalLSN; it doubles as the token of its events.
	final pglogrepl.LSN
	// end is CommitMessage.TransactionEndLSN, or 0 while the transaction is
	// open: Commit only accepts an end above final, so 0 is never a real end.
	end pglogrepl.LSN
	// pending counts the events produced and not yet acked.
	pending int
}

// at returns the i-th transaction of the ring, the oldest being 0.
func (t *Tracker) at(i int) *txn {
	j := t.start + i
	if j >= len(t.buf) {
		j -= len(t.buf)
	}
	return &t.buf[j]
}

// find returns the ring position of the transaction whose final LSN is token.
// Acks mostly complete the oldest transaction, so the head is tried first;
// otherwise the ring is sorted by final LSN and a binary search finds it.
func (t *Tracker) find(token pglogrepl.LSN) (int, bool) {
	if t.count == 0 {
		return 0, false
	}
	if t.buf[t.start].final == token {
		return 0, true
	}
	lo, hi := 1, t.count
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.at(m).final < token {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < t.count && t.at(lo).final == token {
		return lo, true
	}
	return 0, false
}

// retire pops the complete transactions at the head of the ring, each moving
// the safe position to its end. It stops at the first transaction that is
// open or has an event in flight, since nothing after it may be confirmed.
func (t *Tracker) retire() {
	for t.count > 0 {
		x := &t.buf[t.start]
		if x.end == 0 || x.pending > 0 {
			return
		}
		t.safe = x.end
		t.start++
		if t.start == len(t.buf) {
			t.start = 0
		}
		t.count--
	}
	// The ring is empty: start over at 0, like etcd's Inflights, and give
	// back a buffer that outgrew the limit because the caller ignored Full.
	t.start = 0
	t.shrink()
}

// limit is the ring size a caller that waits on Full needs: maxTxns committed
// transactions and the open one.
func (t *Tracker) limit() int {
	return t.maxTxns + 1
}

// grow doubles the full ring, up to limit if it is below it, and beyond when
// the caller keeps beginning transactions while Full. The buffer grows on
// demand rather than being preallocated, so a Tracker with a generous limit
// costs only what it uses.
func (t *Tracker) grow() {
	n := 2 * len(t.buf)
	if n == 0 {
		n = 1
	}
	if len(t.buf) < t.limit() && n > t.limit() {
		n = t.limit()
	}
	buf := make([]txn, n)
	k := copy(buf, t.buf[t.start:])
	copy(buf[k:], t.buf[:t.start])
	t.buf = buf
	t.start = 0
}

// shrink drops an empty ring's buffer if it grew beyond limit, so memory
// stays bounded by what a caller that respects Full needs.
func (t *Tracker) shrink() {
	if t.count == 0 && len(t.buf) > t.limit() {
		t.buf = nil
	}
}
