package loadtest

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// The load tester's per-delivery paths must stay far cheaper than the
// server's, or the tool measures itself. BenchmarkScanPush,
// BenchmarkAppendPublish (proto_test.go) and BenchmarkAtomicHistogramRecord
// (histogram_test.go) cover scanning, publishing and latency recording;
// this covers the seq accounting every delivery goes through and the
// readers' whole per-delivery work after the read (parse + handleFrame).

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

// benchPushes returns a connection in the measurement window and a buffer
// of n push frames (offsets 1…n, a send time and 64 bytes of padding each,
// as publishers send them) for its channel.
func benchPushes(b *testing.B, n int) (*conn, []byte) {
	c, _ := testConn(b)
	c.r.windowStart.Store(1)
	c.r.windowEnd.Store(math.MaxInt64)
	now := time.Now().UnixNano()
	var buf []byte
	for i := 1; i <= n; i++ {
		line := fmt.Sprintf(`{"push":{"channel":%q,"pub":{"data":{"t":%d,"p":%q},"offset":%d}}}`, c.sub.name, now, strings.Repeat("x", 64), i)
		buf = append(buf, serverFrame(true, ws.OpText, false, line)...)
	}
	return c, buf
}

// BenchmarkFeedPushes is the epoll reader's per-read work after read(2):
// one read holding 16 push frames, parsed in place and accounted (seq
// tracker, delivery latency). No allocation.
func BenchmarkFeedPushes(b *testing.B) {
	const n = 16
	c, buf := benchPushes(b, n)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		c.sub.tr = seqTracker{}
		c.sub.tr.begin(0)
		if err := c.feed(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	if c.sub.tr.last != n || c.sub.tr.dup != 0 {
		b.Fatalf("tracker %+v", c.sub.tr)
	}
}

// BenchmarkFeedPushesSplit feeds the same frames in 100-byte reads: a
// frame split across reads is completed in c.part, which costs one
// allocation of the frame's size (released when the frame is complete,
// so that idle connections hold no buffer).
func BenchmarkFeedPushesSplit(b *testing.B) {
	const n = 16
	c, buf := benchPushes(b, n)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		c.sub.tr = seqTracker{}
		c.sub.tr.begin(0)
		for i := 0; i < len(buf); i += 100 {
			if err := c.feed(buf[i:min(i+100, len(buf))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}

// BenchmarkReadFramePushes is the goroutine reader's parsing of the same
// frames through its bufio.Reader (without the syscalls and goroutine
// switches that dominate its cost on a socket).
func BenchmarkReadFramePushes(b *testing.B) {
	const n = 16
	c, buf := benchPushes(b, n)
	rd := bytes.NewReader(buf)
	c.resetReader(rd)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		c.sub.tr = seqTracker{}
		c.sub.tr.begin(0)
		rd.Reset(buf)
		c.br.Reset(rd)
		for range n {
			f, err := c.readFrame()
			if err != nil {
				b.Fatal(err)
			}
			if err := c.handleFrame(f); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}
