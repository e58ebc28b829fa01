package relay

import (
	"runtime"
	"strings"
	"testing"
)

func TestConfigLoopsAndProcs(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		loops int
	}{
		{Config{Multicore: true}, runtime.NumCPU()},
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
