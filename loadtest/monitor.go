package loadtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// monitor samples the run once a second: connection and message counters
// (from a progress source), the server's RSS and CPU, the load tester's own
// CPU. It keeps the timeline and prints the live progress line.
type monitor struct {
	cfg *Config
	out io.Writer
	tty bool

	begin time.Time
	stopC chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	tl       *timeline
	samples  []Sample
	started  bool
	lastLine int

	// live is the --server-pprof measurement: its base is taken by Run
	// before any connection, its end by the sampler in the window's last
	// second (live.Conns == 0 until then).
	live *LiveHeapStats

	// procs are the --procs processes; steadyDeliv and steadyAcks count
	// what arrived over the same steady ticks their CPU is summed over.
	procs                   []*procAcc
	steadyDeliv, steadyAcks uint64
}

func newMonitor(cfg *Config, out io.Writer) *monitor {
	m := &monitor{cfg: cfg, out: out, begin: time.Now(), stopC: make(chan struct{}), done: make(chan struct{})}
	if f, ok := out.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			m.tty = true
		}
	}
	return m
}

func (m *monitor) setTimeline(tl timeline) {
	m.mu.Lock()
	m.tl = &tl
	m.mu.Unlock()
}

// phase names the phase at t.
func (m *monitor) phase(t time.Time) string {
	m.mu.Lock()
	tl := m.tl
	m.mu.Unlock()
	ns := t.UnixNano()
	switch {
	case tl == nil || ns < tl.Start:
		return "connect"
	case ns < tl.WindowStart:
		return "warmup"
	case ns < tl.WindowEnd:
		return "steady"
	case ns < tl.End:
		return "drain"
	}
	return "closing"
}

// start begins sampling source every second until stop.
func (m *monitor) start(source func() progress) {
	m.mu.Lock()
	m.started = true
	m.mu.Unlock()
	go func() {
		defer close(m.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		prev, prevAt := source(), time.Now()
		var srvPrev procSample
		srvOK := false
		srvErr := ""
		// The first sample is the baseline before any connection: the
		// server's RSS at 0 connections anchors the RSS-per-connection fit.
		base := Sample{T: prevAt.Sub(m.begin).Seconds(), Phase: m.phase(prevAt), Conns: prev.Ready, Attempted: prev.Attempted, Errors: prev.Errors}
		if m.cfg.ServerPID > 0 {
			if s, err := readProc(m.cfg.ServerPID); err == nil {
				srvPrev, srvOK = s, true
				base.ServerRSS = s.rss
			}
		}
		procs, _ := parseProcs(m.cfg.Procs) // validated by Config.Validate
		m.mu.Lock()
		for _, np := range procs {
			a := &procAcc{namedProc: np}
			a.tick(false)
			m.procs = append(m.procs, a)
		}
		m.samples = append(m.samples, base)
		m.mu.Unlock()
		for {
			select {
			case <-m.stopC:
				return
			case now := <-t.C:
				p := source()
				d := now.Sub(prevAt).Seconds()
				s := Sample{
					T: now.Sub(m.begin).Seconds(), Phase: m.phase(now), Conns: p.Ready, Attempted: p.Attempted,
					Errors: p.Errors,
				}
				if d > 0 {
					s.DeliveriesPerS = float64(p.Delivered-prev.Delivered) / d
					s.PublishesPerS = float64(p.Published-prev.Published) / d
					s.AcksPerS = float64(p.Acked-prev.Acked) / d
					s.ClientCPU = (p.CPU - prev.CPU) / d * 100
				}
				if m.cfg.ServerPID > 0 {
					if ss, err := readProc(m.cfg.ServerPID); err == nil {
						s.ServerRSS = ss.rss
						if srvOK {
							s.ServerCPU = cpuPercent(srvPrev, ss)
						}
						srvPrev, srvOK = ss, true
					} else if srvErr == "" {
						srvErr = err.Error()
						fmt.Fprintf(m.out, "\nloadtest: server pid %d: %v\n", m.cfg.ServerPID, err)
					}
				}
				steady := s.Phase == "steady"
				m.mu.Lock()
				for _, a := range m.procs {
					a.tick(steady)
				}
				if steady {
					m.steadyDeliv += p.Delivered - prev.Delivered
					m.steadyAcks += p.Acked - prev.Acked
				}
				m.mu.Unlock()
				prev, prevAt = p, now
				m.maybeLiveEnd(now, p.Ready)
				m.mu.Lock()
				m.samples = append(m.samples, s)
				m.mu.Unlock()
				if m.cfg.Progress {
					m.printLine(s)
				}
			}
		}
	}()
}

// liveBase takes the --server-pprof baseline; call it before connecting.
func (m *monitor) liveBase(ctx context.Context) {
	if m.cfg.ServerPprof == "" {
		return
	}
	l := &LiveHeapStats{}
	b, err := liveHeap(ctx, m.cfg.ServerPprof)
	if err != nil {
		l.Error = err.Error()
		fmt.Fprintf(m.out, "loadtest: --server-pprof: %v\n", err)
	}
	l.BaseBytes = b
	m.mu.Lock()
	m.live = l
	m.mu.Unlock()
}

// maybeLiveEnd takes the --server-pprof end sample once, in the last
// second of the steady window (the sampler ticks every second).
func (m *monitor) maybeLiveEnd(now time.Time, conns int) {
	m.mu.Lock()
	l, tl := m.live, m.tl
	m.mu.Unlock()
	if l == nil || l.Error != "" || l.Conns > 0 || tl == nil || m.phase(now) != "steady" ||
		now.Add(time.Second).UnixNano() < tl.WindowEnd || conns <= 0 {
		return
	}
	e, err := liveHeap(context.Background(), m.cfg.ServerPprof)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		l.Error = err.Error()
		return
	}
	l.EndBytes, l.Conns = e, conns
	l.PerConn = (float64(e) - float64(l.BaseBytes)) / float64(conns)
}

// liveStats returns the --server-pprof result, nil when not asked for or
// when the window ended before the end sample.
func (m *monitor) liveStats() *LiveHeapStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch l := m.live; {
	case l == nil:
		return nil
	case l.Error == "" && l.Conns == 0:
		return &LiveHeapStats{BaseBytes: l.BaseBytes, Error: "no sample in the last second of the window (is --duration at least 1s?)"}
	default:
		c := *l
		return &c
	}
}

// procStats returns the --procs processes' window figures, nil without.
func (m *monitor) procStats() []ProcStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ProcStats
	for _, a := range m.procs {
		out = append(out, a.stats(m.steadyDeliv, m.steadyAcks))
	}
	return out
}

func (m *monitor) printLine(s Sample) {
	line := fmt.Sprintf("loadtest %s %4.0fs %-7s conns %d/%d  pub %s/s  ack %s/s  deliv %s/s  errs %d  cpu %.0f%%",
		m.cfg.Scenario, s.T, s.Phase, s.Conns, m.cfg.Conns+m.cfg.dedicatedPublishers(),
		humanRate(s.PublishesPerS), humanRate(s.AcksPerS), humanRate(s.DeliveriesPerS), s.Errors, s.ClientCPU)
	if m.cfg.ServerPID > 0 {
		line += fmt.Sprintf("  server %s %.0f%%", humanBytes(s.ServerRSS), s.ServerCPU)
	}
	if m.tty {
		fmt.Fprintf(m.out, "\r%s\x1b[K", line)
	} else {
		fmt.Fprintln(m.out, line)
	}
	m.lastLine = len(line)
}

// stop ends sampling and returns the timeline.
func (m *monitor) stop() []Sample {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if started {
		close(m.stopC)
		<-m.done
	}
	if m.tty && m.lastLine > 0 {
		fmt.Fprintln(m.out)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.samples
}
