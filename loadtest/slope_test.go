package loadtest

import (
	"strings"
	"testing"
)

func TestRSSSlope(t *testing.T) {
	s := func(conns int, rss uint64) Sample { return Sample{Conns: conns, ServerRSS: rss, Phase: "steady"} }
	closing := func(conns int, rss uint64) Sample { c := s(conns, rss); c.Phase = "closing"; return c }
	tests := []struct {
		name    string
		samples []Sample
		want    float64
		ok      bool
	}{
		{"linear 2 KiB per connection", []Sample{s(0, 50<<20), s(1000, 50<<20+2048*1000), s(2000, 50<<20+2048*2000)}, 2048, true},
		{"samples without RSS ignored", []Sample{s(0, 0), s(100, 1000), s(200, 2000), s(300, 3000)}, 10, true},
		// Connections closing while RSS stays up are not part of the fit
		// (with them this would come out at ~790 B).
		{"closing samples ignored", []Sample{s(0, 50<<20), s(1000, 50<<20+2048*1000), s(2000, 50<<20+2048*2000), closing(100, 50<<20+2048*2000)}, 2048, true},
		{"too few samples", []Sample{s(0, 1), s(1000, 2)}, 0, false},
		{"connections barely change", []Sample{s(1000, 1), s(1010, 2), s(1020, 3)}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := RSSSlope(tt.samples)
			if ok != tt.ok || ok && (got < tt.want-1e-6 || got > tt.want+1e-6) {
				t.Errorf("RSSSlope = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestServerLineShowsSlopeForIdleOnly(t *testing.T) {
	s := &ServerStats{PID: 7, RSSMax: 70 << 20, RSSEnd: 69 << 20, RSSPerConn: 1463.4, CPUAvgPct: 3, CPUMaxPct: 5}
	if got := s.describe(ScenarioIdle); !strings.Contains(got, "1463 B per connection (slope)") {
		t.Errorf("idle: %q, want the slope", got)
	}
	if got := s.describe(ScenarioChat); strings.Contains(got, "per connection") {
		t.Errorf("chat: %q, want no slope", got)
	}
}
