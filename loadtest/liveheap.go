package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// LiveHeapStats is the server's live Go heap, read from its net/http/pprof
// endpoint (--server-pprof) right after a garbage collection it forces:
// once before the first connection and once in the last second of the
// steady window. Unlike the RSS slope it does not move with when the
// server's GC happened to run, so it compares builds to the byte; it
// leaves out what RSS adds on top (GC headroom, stacks, fragmentation).
// Meaningful for idle runs.
type LiveHeapStats struct {
	BaseBytes uint64 `json:"base_bytes"` // before connecting
	EndBytes  uint64 `json:"end_bytes"`  // end of the window
	Conns     int    `json:"conns"`      // ready connections at the end sample
	// PerConn is (EndBytes − BaseBytes) / Conns.
	PerConn float64 `json:"per_conn"`
	Error   string  `json:"error,omitempty"`
}

func (l *LiveHeapStats) describe() string {
	if l.Error != "" {
		return "live heap: " + l.Error
	}
	return fmt.Sprintf("live heap (forced GC) %s before connecting, %s with %d connections: %.0f B per connection",
		humanBytes(l.BaseBytes), humanBytes(l.EndBytes), l.Conns, l.PerConn)
}

// liveHeap forces a GC in the server behind the net/http/pprof base URL
// (heap profile with gc=1) and returns its heap in use right after, from
// the runtime.MemStats the text profile ends with. It asks twice: what
// sync.Pools hold survives one GC (as their victim cache) and goes with
// the second.
func liveHeap(ctx context.Context, base string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := heapAfterGC(ctx, base); err != nil {
		return 0, err
	}
	return heapAfterGC(ctx, base)
}

func heapAfterGC(ctx context.Context, base string) (uint64, error) {
	u := strings.TrimSuffix(base, "/") + "/debug/pprof/heap?gc=1&debug=1"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading %s: %w", u, err)
	}
	return 0, fmt.Errorf("GET %s: no HeapAlloc in the profile (not a Go net/http/pprof endpoint?)", u)
}
