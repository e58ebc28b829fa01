package loadtest

import (
	"errors"
	"flag"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseArgsUsageErrors(t *testing.T) {
	t.Setenv("HERALD_TOKEN_SECRET", "")
	ok := []string{"--secret", "s"}
	cases := []struct {
		name string
		args []string
		msg  string // part of the message
	}{
		{"no scenario", nil, "missing scenario"},
		{"unknown scenario", []string{"storm"}, `unknown scenario "storm"`},
		{"unknown flag", append([]string{"idle", "--bogus"}, ok...), "bogus"},
		{"stray argument", append([]string{"idle", "extra"}, ok...), "unexpected arguments"},
		{"no credentials", []string{"idle"}, "no credentials"},
		{"secret and token", []string{"idle", "--secret", "s", "--token", "t"}, "exclusive"},
		{"bad url", append([]string{"idle", "--url", "http://x/"}, ok...), "--url"},
		{"zero conns", append([]string{"idle", "--conns", "0"}, ok...), "--conns must be positive"},
		{"bad number", append([]string{"idle", "--conns", "many"}, ok...), "invalid value"},
		{"channels over conns", append([]string{"chat", "--conns", "5", "--channels", "6"}, ok...), "must not exceed --conns"},
		{"idle with rate", append([]string{"idle", "--rate", "5"}, ok...), "idle does not publish"},
		{"broadcast channels", append([]string{"broadcast", "--channels", "3"}, ok...), "exactly one channel"},
		{"chat zero rate", append([]string{"chat", "--rate", "0"}, ok...), "positive --rate"},
		{"negative rate", append([]string{"chat", "--rate", "-3"}, ok...), "--rate must not be negative"},
		{"zero duration", append([]string{"idle", "--duration", "0s"}, ok...), "--duration must be positive"},
		{"churn rate", append([]string{"churn", "--churn-rate", "0"}, ok...), "--churn-rate"},
		{"drop fraction", append([]string{"recovery", "--drop-fraction", "1.5"}, ok...), "--drop-fraction"},
		{"reconnect delay", append([]string{"recovery", "--duration", "2s", "--reconnect-delay", "5s"}, ok...), "--reconnect-delay"},
		{"source ips", append([]string{"idle", "--source-ips", "127.0.0.9-127.0.0.2"}, ok...), "backwards"},
		{"source ip junk", append([]string{"idle", "--source-ips", "abc"}, ok...), "not an IPv4"},
		{"workers too few", append([]string{"idle", "--conns", "100", "--workers", "2", "--conns-per-process", "10"}, ok...), "cannot hold"},
		{"server pid", append([]string{"idle", "--server-pid", "999999999"}, ok...), "no such process"},
		{"server pprof", append([]string{"idle", "--server-pprof", "127.0.0.1:6060"}, ok...), "--server-pprof must be an http"},
		{"publishers", append([]string{"broadcast", "--publishers", "0"}, ok...), "--publishers"},
		{"payload", append([]string{"chat", "--payload", "-1"}, ok...), "--payload"},
		{"server-side with token", []string{"chat", "--token", "t", "--server-side"}, "--server-side needs --secret"},
		{"reader", append([]string{"idle", "--reader", "poll"}, ok...), "--reader must be"},
		{"readers", append([]string{"idle", "--readers", "-1"}, ok...), "--readers must be"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseArgs(c.args, io.Discard)
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("err = %v, want ErrUsage", err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("message %q lacks %q", err, c.msg)
			}
		})
	}
	if _, err := ParseArgs([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	if _, err := ParseArgs([]string{"chat", "-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("chat -h: %v", err)
	}
}

func TestParseArgsDefaults(t *testing.T) {
	t.Setenv("HERALD_TOKEN_SECRET", "from-env")
	cases := []struct {
		args     []string
		channels int
		rate     float64
		workers  int
	}{
		{[]string{"idle"}, 1, 0, 1},
		{[]string{"broadcast"}, 1, 10, 1},
		{[]string{"chat"}, 100, 100, 1},
		{[]string{"churn"}, 10, 0, 1},
		{[]string{"recovery"}, 10, 50, 1},
		{[]string{"idle", "--conns", "40000"}, 1, 0, 3},
		{[]string{"broadcast", "--conns", "19000"}, 1, 10, 2}, // plus the publisher
		{[]string{"chat", "--conns", "200", "--channels", "7", "--rate", "3", "--workers", "2"}, 7, 3, 2},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			cfg, err := ParseArgs(c.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Channels != c.channels || cfg.Rate != c.rate || cfg.workerCount() != c.workers {
				t.Errorf("channels %d rate %g workers %d, want %d %g %d", cfg.Channels, cfg.Rate, cfg.workerCount(), c.channels, c.rate, c.workers)
			}
			if cfg.Secret != "from-env" || !strings.HasPrefix(cfg.ChannelPrefix, "lt-") || cfg.Seed == 0 || cfg.Duration != 30*time.Second {
				t.Errorf("defaults: %+v", cfg)
			}
		})
	}
}

func TestMakePlans(t *testing.T) {
	cfg := &Config{Scenario: ScenarioBroadcast, Conns: 10, Channels: 1, Rate: 90, Publishers: 3, ConnectRate: 100, TestDropNth: 5}
	ps := makePlans(cfg, 2)
	if ps[0].ConnFrom != 0 || ps[0].ConnTo != 5 || ps[1].ConnFrom != 5 || ps[1].ConnTo != 10 {
		t.Errorf("ranges %+v", ps)
	}
	if len(ps[0].Publishers) != 2 || len(ps[1].Publishers) != 1 || ps[0].PubRate != 60 || ps[1].PubRate != 30 {
		t.Errorf("publishers %+v", ps)
	}
	if ps[0].DropNth != 5 || ps[1].DropNth != 0 || ps[0].ConnectRate != 50 {
		t.Errorf("drop/connect %+v", ps)
	}
	chat := &Config{Scenario: ScenarioChat, Conns: 9, Channels: 3, Rate: 90}
	total := 0.0
	for _, p := range makePlans(chat, 3) {
		total += p.PubRate
	}
	if total != 90 {
		t.Errorf("chat rate split to %g", total)
	}
}

func TestParseSourceIPs(t *testing.T) {
	cases := []struct {
		spec, host string
		want       []string
	}{
		{"auto", "127.0.0.1", []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9"}},
		{"auto", "localhost", []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9"}},
		{"auto", "10.1.2.3", nil},
		{"auto", "example.com", nil},
		{"none", "127.0.0.1", nil},
		{"127.0.0.2, 127.0.0.5-127.0.0.6", "x", []string{"127.0.0.2", "127.0.0.5", "127.0.0.6"}},
	}
	for _, c := range cases {
		ips, err := parseSourceIPs(c.spec, c.host)
		if err != nil {
			t.Fatalf("%s: %v", c.spec, err)
		}
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s @%s = %v, want %v", c.spec, c.host, got, c.want)
		}
	}
}

func TestSourcePoolRoundRobin(t *testing.T) {
	ips, _ := parseSourceIPs("127.0.0.2-127.0.0.4", "")
	p := newSourcePool(ips)
	var got []string
	for range 7 {
		got = append(got, p.pick().IP.String())
	}
	want := "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.2"
	if strings.Join(got, ",") != want {
		t.Errorf("order %v", got)
	}
	if newSourcePool(nil).pick() != nil {
		t.Error("empty pool picked an address")
	}

	// Real connections come from the rotated addresses.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 6 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			seen[c.RemoteAddr().(*net.TCPAddr).IP.String()]++
			mu.Unlock()
			c.Close()
		}
	}()
	p = newSourcePool(ips)
	for range 6 {
		c, err := p.dial(t.Context(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	wg.Wait()
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		if seen[ip] != 2 {
			t.Errorf("connections from %s: %d, want 2 (%v)", ip, seen[ip], seen)
		}
	}
}

func TestParseProcs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{
		{"", 0, false},
		{"relay=12", 1, false},
		{"relay=12, controller=13,kafka=14", 3, false},
		{"relay", 0, true},
		{"relay=x", 0, true},
		{"=12", 0, true},
		{"relay=1,relay=2", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseProcs(tc.in)
			if (err != nil) != tc.err || len(got) != tc.want {
				t.Fatalf("parseProcs(%q) = %v, %v; want %d entries, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}
