package loadtest

import "testing"

// The load tester's per-delivery paths must stay far cheaper than the
// server's, or the tool measures itself. BenchmarkScanPush,
// BenchmarkAppendPublish (proto_test.go) and BenchmarkAtomicHistogramRecord
// (histogram_test.go) cover scanning, publishing and latency recording;
// this covers the seq accounting every delivery goes through.

// BenchmarkSeqTrackerInOrder accounts in-order deliveries of one
// subscription (the common case): no allocation.
func BenchmarkSeqTrackerInOrder(b *testing.B) {
	var t seqTracker
	t.begin(0)
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		if t.observe(seq) != seqInOrder {
			b.Fatal("not in order")
		}
	}
}

// BenchmarkSeqTrackerGapFill accounts a stream where every 64th seq arrives
// one step late (a gap opened, then filled): the out-of-order path.
func BenchmarkSeqTrackerGapFill(b *testing.B) {
	var t seqTracker
	t.begin(0)
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq += 2
		if seq%64 == 0 {
			t.observe(seq)
			t.observe(seq - 1)
		} else {
			t.observe(seq - 1)
			t.observe(seq)
		}
	}
}
