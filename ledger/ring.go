package ledger

import "time"

// txn is one transaction of the ring.
type txn struct {
	// final is BeginMessage.FinalLSN; it doubles as the token of its events.
	final LSN
	// end is CommitMessage.TransactionEndLSN, or 0 while the transaction is
	// open: Commit only accepts an end above final, so 0 is never a real end.
	end LSN
	// commitTime is when the transaction committed in PostgreSQL.
	commitTime time.Time
	// events counts the events produced; pending those awaiting a report;
	// blocked those refused or never produced, which keep it from being safe.
	events, pending, blocked int
}

// at returns the i-th transaction of the ring, the oldest being 0.
func (l *Ledger) at(i int) *txn {
	j := l.start + i
	if j >= len(l.buf) {
		j -= len(l.buf)
	}
	return &l.buf[j]
}

// find returns the ring position of the transaction whose final LSN is token.
// Acks mostly complete the oldest transaction, so the head is tried first;
// otherwise the ring is sorted by final LSN and a binary search finds it.
func (l *Ledger) find(token LSN) (int, bool) {
	if l.count == 0 {
		return 0, false
	}
	if l.buf[l.start].final == token {
		return 0, true
	}
	lo, hi := 1, l.count
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if l.at(m).final < token {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < l.count && l.at(lo).final == token {
		return lo, true
	}
	return 0, false
}

// retire pops the complete transactions at the head of the ring, each moving
// the safe position to its end. It stops at the first transaction that is
// open or has an event in flight, since nothing after it may be confirmed.
func (l *Ledger) retire() {
	for l.count > 0 {
		x := &l.buf[l.start]
		if x.end == 0 || x.pending > 0 || x.blocked > 0 {
			return
		}
		l.safe = x.end
		l.ringCommitted -= x.events
		l.keepRetired(x)
		l.start++
		if l.start == len(l.buf) {
			l.start = 0
		}
		l.count--
	}
	// The ring is empty: start over at 0, like etcd's Inflights, and give
	// back a buffer that outgrew the limit because the caller ignored Full.
	l.start = 0
	l.shrink()
}

// limit is the ring size a caller that waits on Full needs: maxTxns committed
// transactions and the open one.
func (l *Ledger) limit() int {
	return l.maxTxns + 1
}

// grow doubles the full ring, up to limit if it is below it, and beyond when
// the caller keeps beginning transactions while Full. The buffer grows on
// demand rather than being preallocated, so a Tracker with a generous limit
// costs only what it uses.
func (l *Ledger) grow() {
	n := 2 * len(l.buf)
	if n == 0 {
		n = 1
	}
	if len(l.buf) < l.limit() && n > l.limit() {
		n = l.limit()
	}
	buf := make([]txn, n)
	k := copy(buf, l.buf[l.start:])
	copy(buf[k:], l.buf[:l.start])
	l.buf = buf
	l.start = 0
}

// shrink drops an empty ring's buffer if it grew beyond limit, so memory
// stays bounded by what a caller that respects Full needs.
func (l *Ledger) shrink() {
	if l.count == 0 && len(l.buf) > l.limit() {
		l.buf = nil
	}
}

// keepRetired remembers a retired transaction until it is confirmed. One with no
// events is folded into the entry before it, which then spans both ends, so a stream
// of transactions on other tables costs no memory.
func (l *Ledger) keepRetired(x *txn) {
	if n := len(l.retired); n > l.retiredHead && x.events == 0 {
		r := &l.retired[n-1]
		r.lastEnd, r.lastAt = x.end, x.commitTime
		return
	}
	l.retired = append(l.retired, retiredTxn{end: x.end, at: x.commitTime, events: x.events, lastEnd: x.end, lastAt: x.commitTime})
	l.retiredEvents += x.events
}
