package loadtest

import (
	"fmt"
	"strconv"
	"strings"
)

// namedProc is one entry of --procs.
type namedProc struct {
	Name string
	PID  int
}

// parseProcs parses --procs: "name=pid,name=pid"; "" is none.
func parseProcs(s string) ([]namedProc, error) {
	var out []namedProc
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		name, pid, ok := strings.Cut(strings.TrimSpace(f), "=")
		n, err := strconv.Atoi(pid)
		if !ok || name == "" || err != nil || n <= 0 {
			return nil, fmt.Errorf("want name=pid, got %q", f)
		}
		if seen[name] {
			return nil, fmt.Errorf("name %q twice", name)
		}
		seen[name] = true
		out = append(out, namedProc{Name: name, PID: n})
	}
	return out, nil
}

// ProcStats is one --procs process over the steady window: the CPU it
// used between the sampler's ticks that fell in the window, and that CPU
// divided by the deliveries the load tester received over the same ticks.
type ProcStats struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"` // user+system, steady ticks only
	CPUAvgPct  float64 `json:"cpu_avg_pct"` // 100 = one core
	// USPerDelivery is CPUSeconds per delivery in µs; 0 without deliveries.
	USPerDelivery float64 `json:"us_per_delivery"`
	// USPerPublish is CPUSeconds per acked publish in µs; 0 without.
	USPerPublish float64 `json:"us_per_publish"`
	RSSEnd       uint64  `json:"rss_end"` // at the last steady tick
	Error        string  `json:"error,omitempty"`
}

// procAcc accumulates one --procs process in the monitor.
type procAcc struct {
	namedProc
	prev    procSample
	prevOK  bool
	cpu     float64
	rss     uint64
	seconds float64
	err     string
}

// tick reads the process; when steady, its CPU since the previous tick
// counts.
func (a *procAcc) tick(steady bool) {
	s, err := readProc(a.PID)
	if err != nil {
		if a.err == "" {
			a.err = err.Error()
		}
		a.prevOK = false
		return
	}
	if steady && a.prevOK {
		a.cpu += s.cpu - a.prev.cpu
		a.seconds += s.at.Sub(a.prev.at).Seconds()
		a.rss = s.rss
	}
	a.prev, a.prevOK = s, true
}

func (a *procAcc) stats(deliveries, acks uint64) ProcStats {
	p := ProcStats{Name: a.Name, PID: a.PID, CPUSeconds: a.cpu, RSSEnd: a.rss, Error: a.err}
	if a.seconds > 0 {
		p.CPUAvgPct = a.cpu / a.seconds * 100
	}
	if deliveries > 0 {
		p.USPerDelivery = a.cpu / float64(deliveries) * 1e6
	}
	if acks > 0 {
		p.USPerPublish = a.cpu / float64(acks) * 1e6
	}
	return p
}

// describe is the process's line of the summary and the HTML report.
func (p ProcStats) describe() string {
	s := fmt.Sprintf("%s (pid %d): %.2f CPU s in the window (%.0f%%), %.1f µs per delivery, %.1f µs per publish, RSS %s",
		p.Name, p.PID, p.CPUSeconds, p.CPUAvgPct, p.USPerDelivery, p.USPerPublish, humanBytes(p.RSSEnd))
	if p.Error != "" {
		s += "; " + p.Error
	}
	return s
}
