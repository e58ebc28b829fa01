package loadtest

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Result is the outcome of a run, written as JSON by --out and rendered by
// --html. Latencies are in milliseconds, sizes in bytes, CPU in percent of
// one core.
type Result struct {
	Scenario  string    `json:"scenario"`
	URL       string    `json:"url"`
	Config    Config    `json:"config"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	Aborted   bool      `json:"aborted,omitempty"`
	Processes int       `json:"processes"`
	WindowS   float64   `json:"window_s"`

	Connections ConnStats                 `json:"connections"`
	Latency     map[string]LatencySummary `json:"latency_ms"`
	Throughput  Throughput                `json:"throughput"`
	Delivery    DeliveryStats             `json:"delivery"`
	Recovery    *RecoveryStats            `json:"recovery,omitempty"`
	Server      *ServerStats              `json:"server,omitempty"`
	LiveHeap    *LiveHeapStats            `json:"live_heap,omitempty"` // --server-pprof
	Procs       []ProcStats               `json:"procs,omitempty"`     // --procs
	Client      ClientStats               `json:"client"`
	Errors      map[string]uint64         `json:"errors,omitempty"`
	ErrorSample []string                  `json:"error_samples,omitempty"`
	Counters    map[string]uint64         `json:"counters"`
	Timeline    []Sample                  `json:"timeline"`
	Histograms  map[string]*Histogram     `json:"histograms"` // raw, nanoseconds
}

// ConnStats counts connections.
type ConnStats struct {
	Target        int    `json:"target"`         // --conns plus dedicated publishers
	Attempted     uint64 `json:"attempted"`      // including churn replacements
	Connected     uint64 `json:"connected"`      // initial connections that became ready
	ConnectFailed uint64 `json:"connect_failed"` // initial connections that did not
	Peak          int    `json:"peak"`           // most ready at once (sampled)
	AtEnd         int    `json:"at_end"`         // ready when the run ended
	Reconnects    uint64 `json:"reconnects"`
	Churned       uint64 `json:"churned,omitempty"`
}

// LatencySummary holds percentiles in milliseconds.
type LatencySummary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func summarize(h *Histogram) LatencySummary {
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return LatencySummary{
		Count: h.Count(), Mean: h.Mean() / 1e6,
		P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()),
	}
}

// Throughput is measured over the steady-state window: publications sent in
// the window and acked, and deliveries of publications sent in the window.
type Throughput struct {
	Published      uint64  `json:"published"` // all publications written, whole run
	Acked          uint64  `json:"acked"`     // whole run
	PublishErrors  uint64  `json:"publish_errors"`
	Unacked        uint64  `json:"unacked"`
	Deliveries     uint64  `json:"deliveries"` // all pushes received, whole run
	PublishesPerS  float64 `json:"publishes_per_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
}

// DeliveryStats is the seq accounting of every subscription: each should
// receive every seq published after it subscribed exactly once, in order.
type DeliveryStats struct {
	Tracked     bool   `json:"tracked"` // false when the server sent no offsets
	Channels    int    `json:"channels"`
	Expected    uint64 `json:"expected"`
	Received    uint64 `json:"received"` // distinct
	Lost        uint64 `json:"lost"`
	Duplicated  uint64 `json:"duplicated"`
	OutOfOrder  uint64 `json:"out_of_order"`
	Stale       uint64 `json:"stale,omitempty"`           // at or below the subscribe offset
	DroppedHook uint64 `json:"dropped_by_hook,omitempty"` // --test-drop-delivery
}

// RecoveryStats describes the recovery scenario's drops and resubscribes.
type RecoveryStats struct {
	Dropped       uint64 `json:"dropped"`
	Resubscribed  uint64 `json:"resubscribed"`
	Recovered     uint64 `json:"recovered"`
	NotRecovered  uint64 `json:"not_recovered"`
	EpochChanged  uint64 `json:"epoch_changed"`
	RecoveredPubs uint64 `json:"recovered_publications"`
}

// ServerStats is sampled from /proc/<pid>.
type ServerStats struct {
	PID    int    `json:"pid"`
	RSSMax uint64 `json:"rss_max"`
	RSSEnd uint64 `json:"rss_end"`
	// RSSPerConn is the least-squares slope of RSS against ready
	// connections (bytes per connection; see RSSSlope), 0 when the run's
	// connections did not vary enough to fit one. Meaningful for idle
	// runs: with traffic, RSS also grows with buffers and history.
	RSSPerConn float64 `json:"rss_per_conn,omitempty"`
	CPUAvgPct  float64 `json:"cpu_avg_pct"` // over the window
	CPUMaxPct  float64 `json:"cpu_max_pct"`
	Error      string  `json:"error,omitempty"`
}

// ClientStats is the load tester's own CPU use (all processes).
type ClientStats struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUAvgPct  float64 `json:"cpu_avg_pct"` // over the window
}

// Sample is one point of the timeline (one per second).
type Sample struct {
	T              float64 `json:"t"` // seconds since the run began
	Phase          string  `json:"phase"`
	Conns          int     `json:"conns"` // ready
	Attempted      uint64  `json:"attempted"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	PublishesPerS  float64 `json:"publishes_per_s"`
	AcksPerS       float64 `json:"acks_per_s"`
	Errors         uint64  `json:"errors"`
	ServerRSS      uint64  `json:"server_rss,omitempty"`
	ServerCPU      float64 `json:"server_cpu_pct,omitempty"`
	ClientCPU      float64 `json:"client_cpu_pct"`
}

// buildResult merges the process reports.
func buildResult(cfg *Config, reps []*report, tl timeline, samples []Sample, started, finished time.Time, aborted bool) *Result {
	res := &Result{
		Scenario: cfg.Scenario, URL: cfg.URL, Config: *cfg, Started: started, Finished: finished,
		Aborted: aborted, Processes: len(reps), WindowS: cfg.Duration.Seconds(),
		Latency: map[string]LatencySummary{}, Histograms: map[string]*Histogram{},
		Counters: map[string]uint64{}, Errors: map[string]uint64{}, Timeline: samples,
	}
	if res.Config.Secret != "" {
		res.Config.Secret = "(redacted)"
	}
	if res.Config.Token != "" {
		res.Config.Token = "(redacted)"
	}
	var chans []chanAgg
	peakSum := 0
	for _, rep := range reps {
		for k, h := range rep.Hists {
			if res.Histograms[k] == nil {
				res.Histograms[k] = &Histogram{}
			}
			res.Histograms[k].Merge(h)
		}
		for k, v := range rep.Counters {
			res.Counters[k] += v
		}
		for k, v := range rep.Errors {
			res.Errors[k] += v
		}
		for _, s := range rep.Samples {
			if len(res.ErrorSample) < maxErrorSamples {
				res.ErrorSample = append(res.ErrorSample, s)
			}
		}
		if chans == nil {
			chans = make([]chanAgg, len(rep.Chans))
		}
		for i, a := range rep.Chans {
			if i >= len(chans) {
				break
			}
			m := &chans[i]
			m.Subs += a.Subs
			m.SumStart += a.SumStart
			m.Unique += a.Unique
			m.Ended += a.Ended
			m.EndedGap += a.EndedGap
			m.EndedUniq += a.EndedUniq
			m.Dup += a.Dup
			m.OOO += a.OOO
			m.Stale += a.Stale
			m.MaxSeen = max(m.MaxSeen, a.MaxSeen)
			if a.PreRun && (!m.PreRun || a.PreRunMin < m.PreRunMin) {
				m.PreRunMin = a.PreRunMin
				m.PreRun = true
			}
			m.Acked += a.Acked
		}
		res.Client.CPUSeconds += rep.Final.CPU
		res.Throughput.Published += rep.Final.Published
		res.Throughput.Deliveries += rep.Final.Delivered
		res.Connections.AtEnd += rep.ReadyAtEnd
		peakSum += rep.ReadyPeak
	}
	for _, k := range []string{"connect", "subscribe", "publish_ack", "publish_to_delivery"} {
		if res.Histograms[k] == nil {
			res.Histograms[k] = &Histogram{}
		}
		res.Latency[k] = summarize(res.Histograms[k])
	}
	c := res.Counters
	res.Connections.Target = cfg.Conns + cfg.dedicatedPublishers()
	res.Connections.Attempted = c["attempted"]
	res.Connections.Connected = c["connected"]
	res.Connections.ConnectFailed = c["connect_failed"]
	res.Connections.Reconnects = c["reconnects"]
	res.Connections.Churned = c["churned"]
	for _, s := range samples {
		res.Connections.Peak = max(res.Connections.Peak, s.Conns)
	}
	if res.Connections.Peak == 0 {
		res.Connections.Peak = peakSum // no timeline: per-process peaks
	}
	res.Throughput.Acked = c["acked"]
	res.Throughput.PublishErrors = c["publish_errors"]
	res.Throughput.Unacked = c["unacked"]
	if w := cfg.Duration.Seconds(); w > 0 {
		res.Throughput.PublishesPerS = float64(res.Histograms["publish_ack"].Count()) / w
		res.Throughput.DeliveriesPerS = float64(res.Histograms["publish_to_delivery"].Count()) / w
	}

	d := &res.Delivery
	d.Channels = len(chans)
	d.DroppedHook = c["dropped_by_hook"]
	for _, a := range chans {
		final := a.MaxSeen
		if a.PreRun && a.PreRunMin+a.Acked > final {
			final = a.PreRunMin + a.Acked
		}
		if final > 0 {
			d.Tracked = true
		}
		var want uint64
		if a.Subs*final > a.SumStart {
			want = a.Subs*final - a.SumStart
		}
		lost := uint64(0)
		if want > a.Unique {
			lost = want - a.Unique
		}
		d.Expected += want + a.EndedUniq + a.EndedGap
		d.Received += a.Unique + a.EndedUniq
		d.Lost += lost + a.EndedGap
		d.Duplicated += a.Dup
		d.OutOfOrder += a.OOO
		d.Stale += a.Stale
	}
	if cfg.Scenario == ScenarioRecovery || c["reconnects"] > 0 {
		res.Recovery = &RecoveryStats{
			Dropped: c["dropped"], Resubscribed: c["resubscribed"], Recovered: c["recovered"],
			NotRecovered: c["not_recovered"], EpochChanged: c["epoch_changed"], RecoveredPubs: c["recovered_pubs"],
		}
	}
	// Window averages from the timeline.
	var cpuSum, srvSum, srvMax float64
	var n int
	for _, s := range samples {
		if s.Phase != "steady" {
			continue
		}
		n++
		cpuSum += s.ClientCPU
		srvSum += s.ServerCPU
		srvMax = max(srvMax, s.ServerCPU)
	}
	if n > 0 {
		res.Client.CPUAvgPct = cpuSum / float64(n)
	}
	if cfg.ServerPID > 0 {
		ss := &ServerStats{PID: cfg.ServerPID, CPUMaxPct: srvMax}
		if n > 0 {
			ss.CPUAvgPct = srvSum / float64(n)
		}
		for _, s := range samples {
			ss.RSSMax = max(ss.RSSMax, s.ServerRSS)
			if s.ServerRSS > 0 {
				ss.RSSEnd = s.ServerRSS
			}
		}
		if v, ok := RSSSlope(samples); ok {
			ss.RSSPerConn = v
		}
		res.Server = ss
	}
	return res
}

// describe is the server's line of the summary and the HTML report. The
// RSS per connection is shown for idle runs only: with traffic, RSS also
// grows with buffers.
func (s *ServerStats) describe(scenario string) string {
	slope := ""
	if s.RSSPerConn > 0 && scenario == ScenarioIdle {
		slope = fmt.Sprintf(", %.0f B per connection (slope)", s.RSSPerConn)
	}
	return fmt.Sprintf("pid %d: RSS max %s, end %s%s; CPU avg %.0f%%, max %.0f%%",
		s.PID, humanBytes(s.RSSMax), humanBytes(s.RSSEnd), slope, s.CPUAvgPct, s.CPUMaxPct)
}

// RSSSlope is the least-squares slope of server RSS (bytes) against ready
// connections over the samples that have an RSS, from the baseline before
// the first connection to the end of the drain. Samples taken while the
// connections close are left out: RSS stays up as the count falls, which
// would flatten the fit. It needs at least three samples spanning at least
// 100 connections.
func RSSSlope(samples []Sample) (float64, bool) {
	var n, sx, sy, sxx, sxy float64
	lo, hi := math.MaxInt, math.MinInt
	for _, s := range samples {
		if s.ServerRSS == 0 || s.Phase == "closing" {
			continue
		}
		x, y := float64(s.Conns), float64(s.ServerRSS)
		n++
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
		lo, hi = min(lo, s.Conns), max(hi, s.Conns)
	}
	if n < 3 || hi-lo < 100 {
		return 0, false
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0, false
	}
	return (n*sxy - sx*sy) / den, true
}

// Problems lists what went wrong: lost, duplicated or reordered deliveries
// and failed connections. Empty means a clean run.
func (res *Result) Problems() []string {
	var p []string
	d := res.Delivery
	if d.Lost > 0 {
		p = append(p, fmt.Sprintf("%d deliveries lost", d.Lost))
	}
	if d.Duplicated > 0 {
		p = append(p, fmt.Sprintf("%d deliveries duplicated", d.Duplicated))
	}
	if d.OutOfOrder > 0 {
		p = append(p, fmt.Sprintf("%d deliveries out of order", d.OutOfOrder))
	}
	if res.Connections.ConnectFailed > 0 {
		p = append(p, fmt.Sprintf("%d connections failed", res.Connections.ConnectFailed))
	}
	return p
}

// WriteSummary prints a human-readable summary.
func (res *Result) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "scenario %s against %s, %d process(es), window %gs", res.Scenario, res.URL, res.Processes, res.WindowS)
	if res.Aborted {
		fmt.Fprint(w, " (ABORTED)")
	}
	fmt.Fprintln(w)
	cs := res.Connections
	fmt.Fprintf(w, "connections: %d connected, %d failed of %d (peak %d, at end %d, reconnects %d, churned %d)\n",
		cs.Connected, cs.ConnectFailed, cs.Target, cs.Peak, cs.AtEnd, cs.Reconnects, cs.Churned)
	t := res.Throughput
	fmt.Fprintf(w, "throughput: %.1f publishes/s acked, %.1f deliveries/s (published %d, acked %d, errors %d, unacked %d, deliveries %d)\n",
		t.PublishesPerS, t.DeliveriesPerS, t.Published, t.Acked, t.PublishErrors, t.Unacked, t.Deliveries)
	names := make([]string, 0, len(res.Latency))
	for k := range res.Latency {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "%-20s %9s %9s %9s %9s %9s %9s\n", "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max")
	for _, k := range names {
		l := res.Latency[k]
		if l.Count == 0 {
			continue
		}
		fmt.Fprintf(w, "%-20s %9d %9.2f %9.2f %9.2f %9.2f %9.2f\n", k, l.Count, l.P50, l.P90, l.P99, l.P999, l.Max)
	}
	d := res.Delivery
	if d.Tracked {
		fmt.Fprintf(w, "delivery: expected %d, received %d, lost %d, duplicated %d, out of order %d\n",
			d.Expected, d.Received, d.Lost, d.Duplicated, d.OutOfOrder)
	} else if t.Deliveries > 0 {
		fmt.Fprintln(w, "delivery: not tracked (the server sent no offsets)")
	}
	if rc := res.Recovery; rc != nil {
		fmt.Fprintf(w, "recovery: dropped %d, resubscribed %d, recovered %d, not recovered %d (epoch changed %d), recovered publications %d\n",
			rc.Dropped, rc.Resubscribed, rc.Recovered, rc.NotRecovered, rc.EpochChanged, rc.RecoveredPubs)
	}
	if s := res.Server; s != nil {
		fmt.Fprintf(w, "server %s\n", s.describe(res.Scenario))
	}
	if l := res.LiveHeap; l != nil {
		fmt.Fprintf(w, "server %s\n", l.describe())
	}
	for _, p := range res.Procs {
		fmt.Fprintf(w, "%s\n", p.describe())
	}
	fmt.Fprintf(w, "load tester: %.1f CPU s, avg %.0f%% in the window\n", res.Client.CPUSeconds, res.Client.CPUAvgPct)
	if len(res.Errors) > 0 {
		keys := make([]string, 0, len(res.Errors))
		for k := range res.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, res.Errors[k]))
		}
		fmt.Fprintf(w, "errors: %s\n", strings.Join(parts, "; "))
	}
}

func humanBytes(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func humanRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
