package loadtest

import "testing"

func TestSeqTracker(t *testing.T) {
	cases := []struct {
		name                  string
		start                 uint64
		seqs                  []uint64
		final                 uint64
		unique, dup, ooo, gap uint64
		stale, lost           uint64
	}{
		{name: "in order", start: 0, seqs: []uint64{1, 2, 3, 4}, final: 4, unique: 4},
		{name: "starts mid-stream", start: 10, seqs: []uint64{11, 12}, final: 12, unique: 2},
		{name: "gap", start: 0, seqs: []uint64{1, 2, 5}, final: 5, unique: 3, gap: 2, lost: 2},
		{name: "late fills gap", start: 0, seqs: []uint64{1, 3, 2, 4}, final: 4, unique: 4, ooo: 1},
		{name: "duplicate", start: 0, seqs: []uint64{1, 2, 2, 3, 1}, final: 3, unique: 3, dup: 2},
		{name: "late then duplicate of late", start: 0, seqs: []uint64{1, 3, 2, 2}, final: 3, unique: 3, ooo: 1, dup: 1},
		{name: "tail lost", start: 0, seqs: []uint64{1, 2}, final: 5, unique: 2, lost: 3},
		{name: "stale before start", start: 5, seqs: []uint64{4, 5, 6}, final: 6, unique: 1, stale: 2},
		{name: "nothing received", start: 3, final: 7, lost: 4},
		{name: "huge jump not enumerated", start: 0, seqs: []uint64{1, 1<<21 + 2}, final: 1<<21 + 2, unique: 2, gap: 1<<21 + 0, lost: 1 << 21},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tr seqTracker
			tr.begin(c.start)
			tr.begin(c.start + 100) // a second begin keeps the first position
			for _, s := range c.seqs {
				tr.observe(s)
			}
			if tr.unique != c.unique || tr.dup != c.dup || tr.ooo != c.ooo || tr.gaps() != c.gap || tr.stale != c.stale {
				t.Errorf("unique %d dup %d ooo %d gaps %d stale %d; want %d %d %d %d %d",
					tr.unique, tr.dup, tr.ooo, tr.gaps(), tr.stale, c.unique, c.dup, c.ooo, c.gap, c.stale)
			}
			if got := tr.lostUpTo(c.final); got != c.lost {
				t.Errorf("lostUpTo(%d) = %d, want %d", c.final, got, c.lost)
			}
		})
	}
}

func TestSeqTrackerResults(t *testing.T) {
	var tr seqTracker
	tr.begin(0)
	want := []seqResult{seqInOrder, seqGap, seqLate, seqDup}
	for i, s := range []uint64{1, 3, 2, 3} {
		if got := tr.observe(s); got != want[i] {
			t.Errorf("observe(%d) = %d, want %d", s, got, want[i])
		}
	}
	if tr.missing != nil {
		t.Error("missing set not released once empty")
	}
}
