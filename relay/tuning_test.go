package relay

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestConfigLoopsAndProcs(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		loops int
	}{
		{Config{Multicore: true}, startProcs},
		{Config{Multicore: false}, 1},
		{Config{Multicore: true, EventLoops: 3}, 3},
		{Config{Multicore: false, EventLoops: 5}, 5},
	} {
		if got := tc.cfg.Loops(); got != tc.loops {
			t.Errorf("%+v: Loops() = %d, want %d", tc.cfg, got, tc.loops)
		}
		if got := tc.cfg.Procs(); got != tc.loops+1 {
			t.Errorf("%+v: Procs() = %d, want one P more than the loops (%d)", tc.cfg, got, tc.loops+1)
		}
	}
	c := Config{Addr: "127.0.0.1:0", Controllers: []string{"x:1"}, Topic: "t", Partitions: 1,
		ManagementURL: "http://x", EventLoops: -1}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "HERALD_RELAY_EVENT_LOOPS") {
		t.Fatalf("negative event loops: %v", err)
	}
}

// TestFirstPingSpread: connections that arrive at the same instant get
// their first ping at different times, all within the advertised interval
// and none before half of it.
func TestFirstPingSpread(t *testing.T) {
	now := time.Unix(1000, 0)
	const interval = 25 * time.Second
	lo, hi := int64(math.MaxInt64), int64(0)
	for i := 0; i < 10000; i++ {
		at := firstPing(now, interval) - now.UnixNano()
		if at < int64(interval/2) || at > int64(interval) {
			t.Fatalf("first ping %v after connect, want within [%v, %v]", time.Duration(at), interval/2, interval)
		}
		lo, hi = min(lo, at), max(hi, at)
	}
	if spread := time.Duration(hi - lo); spread < interval/2-time.Second {
		t.Fatalf("10,000 simultaneous connections ping within %v of each other, want about %v", spread, interval/2)
	}
}
