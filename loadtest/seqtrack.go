package loadtest

// seqTracker follows the publication offsets (seqs) one subscription of one
// connection receives in one channel. It is owned by the connection's reader
// goroutine.
//
// A subscription starts at the channel offset its subscribe reply reported
// (start): it should then receive every seq start+1 … final exactly once, in
// order. The tracker classifies every arrival:
//   - seq == next expected: in order;
//   - seq beyond next: the seqs in between are missing (a gap) for now;
//   - seq below next that is missing: it arrived late (out of order), no
//     longer missing;
//   - seq below next that is not missing, or not above start: a duplicate
//     (or, at or below start, a stale publication from before the
//     subscription, which is counted apart).
//
// Lost is computed at the end, when the channel's final seq is known:
// final - start - unique; for a subscription ended on purpose (churn) only
// its gaps count, as what it would have received later is unknowable.
type seqTracker struct {
	started   bool
	start     uint64 // channel offset at subscribe: seqs above it are expected
	last      uint64 // highest seq received (start until the first one)
	unique    uint64 // distinct seqs above start received
	dup       uint64
	ooo       uint64
	stale     uint64              // seqs at or below start (before the subscription)
	untracked uint64              // seqs skipped by a jump above maxTrackedGap
	missing   map[uint64]struct{} // seqs below last not yet received; nil when none
}

// begin sets the starting offset. Calling it again (a resubscribe that kept
// its position) is a no-op.
func (t *seqTracker) begin(start uint64) {
	if t.started {
		return
	}
	t.started, t.start, t.last = true, start, start
}

// seqResult classifies one arrival.
type seqResult uint8

const (
	seqInOrder seqResult = iota
	seqGap               // in order relative to the max, but skipped some
	seqLate              // filled an earlier gap: out of order
	seqDup
	seqStale
)

// observe records the arrival of seq.
func (t *seqTracker) observe(seq uint64) seqResult {
	switch {
	case seq <= t.start:
		t.stale++
		return seqStale
	case seq == t.last+1:
		t.last = seq
		t.unique++
		return seqInOrder
	case seq > t.last:
		if seq-t.last-1 > maxTrackedGap {
			// A jump this large is a server bug; do not enumerate it. Late
			// arrivals inside it will count as duplicates.
			t.untracked += seq - t.last - 1
			t.last = seq
			t.unique++
			return seqGap
		}
		if t.missing == nil {
			t.missing = make(map[uint64]struct{}, int(min(seq-t.last-1, 64)))
		}
		for s := t.last + 1; s < seq; s++ {
			t.missing[s] = struct{}{}
		}
		t.last = seq
		t.unique++
		return seqGap
	}
	if _, ok := t.missing[seq]; ok {
		delete(t.missing, seq)
		if len(t.missing) == 0 {
			t.missing = nil
		}
		t.unique++
		t.ooo++
		return seqLate
	}
	t.dup++
	return seqDup
}

// gaps is the number of seqs between start and last not received.
func (t *seqTracker) gaps() uint64 { return uint64(len(t.missing)) + t.untracked }

// maxTrackedGap bounds the missing set one jump may add.
const maxTrackedGap = 1 << 20

// lostUpTo returns how many seqs in start+1 … final were never received.
func (t *seqTracker) lostUpTo(final uint64) uint64 {
	if final <= t.start {
		return 0
	}
	want := final - t.start
	if t.unique >= want {
		return 0
	}
	return want - t.unique
}
