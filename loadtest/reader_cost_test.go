package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// The load tester's own cost per delivery, reader against reader, without
// a server under test: a pump process (this test binary, re-executed)
// accepts the connections, answers connect and subscribe, and then writes
// one push frame to every connection per round, round after round, like a
// broadcast. This process only reads; its CPU time (getrusage) and read
// syscalls (/proc/self/io syscr, which counts reads returning EAGAIN too)
// over the rounds, divided by the deliveries, are the reader's cost.
//
//	HERALD_READER_COST=1 go test -run TestReaderCost -v ./loadtest/
//
// HERALD_READER_COST_CONNS (2000), _ROUNDS (100) and _INTERVAL (40ms)
// change the shape, _MODES (goroutine,epoll) the readers measured and
// _READERS the epoll reader threads (--readers). One mode takes about
// connections/2000 s to connect plus rounds × interval. The figures are
// CPU time, so other load on the machine inflates them (wake-ups, cache):
// compare modes measured in one run.

const pumpEnv = "HERALD_LOADTEST_PUMP"

func TestReaderCost(t *testing.T) {
	if os.Getenv("HERALD_READER_COST") == "" {
		t.Skip("a measurement: set HERALD_READER_COST=1")
	}
	conns := envInt("HERALD_READER_COST_CONNS", 2000)
	rounds := envInt("HERALD_READER_COST_ROUNDS", 100)
	interval := 40 * time.Millisecond
	if v := os.Getenv("HERALD_READER_COST_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		interval = d
	}
	raiseFileLimit()
	t.Logf("%d connections, %d rounds of one push each, every %s", conns, rounds, interval)
	t.Logf("%-9s %11s %9s %14s %14s %12s %12s %18s %10s", "reader", "deliveries", "CPU (s)", "CPU/delivery", "reads/delivery", "epoll reads", "epoll waits", "latency p50/p99", "mem/conn")
	modes := readerModes()
	if v := os.Getenv("HERALD_READER_COST_MODES"); v != "" {
		modes = strings.Split(v, ",")
	}
	for _, mode := range modes {
		m := measureReader(t, mode, conns, rounds, interval)
		t.Logf("%-9s %11d %9.3f %11.2f µs %14.2f %12d %12d %8.0f/%.0f µs %6.1f KiB", mode, m.deliveries, m.cpu.Seconds(),
			float64(m.cpu.Microseconds())/float64(m.deliveries), float64(m.reads)/float64(m.deliveries), m.epollReads, m.epollWaits,
			float64(m.lat.Quantile(0.5))/1e3, float64(m.lat.Quantile(0.99))/1e3, m.mem/1024)
	}
}

type readerCost struct {
	deliveries, reads, epollReads, epollWaits uint64
	cpu                                       time.Duration
	lat                                       *Histogram // pump write → handled
	mem                                       float64    // heap + stacks per idle connection, bytes
}

func measureReader(t *testing.T, mode string, conns, rounds int, interval time.Duration) readerCost {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d,%d", pumpEnv, conns, rounds, interval))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		t.Fatal("pump: no address")
	}
	url := "ws://" + out.Text() + "/connection/websocket"

	cfg, err := ParseArgs([]string{ScenarioIdle, "--url", url, "--secret", testSecret, "--conns", strconv.Itoa(conns),
		"--reader", mode, "--readers", strconv.Itoa(envInt("HERALD_READER_COST_READERS", 0)),
		"--channel-prefix", "cost:", "--progress=false", "--connect-rate", "2000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(cfg, plan{ConnTo: conns, ConnectRate: cfg.ConnectRate})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.connect(t.Context()); err != nil || r.connectedOK.Load() != uint64(conns) {
		t.Fatalf("connected %d of %d: %v %v", r.connectedOK.Load(), conns, err, r.errs.counts)
	}
	// Memory of the idle connections (heap and goroutine stacks).
	time.Sleep(300 * time.Millisecond) // the last handovers
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	memPerConn := float64(ms.HeapInuse+ms.StackInuse) / float64(conns)
	r.windowStart.Store(1) // deliveries record their latency, as in a run
	r.windowEnd.Store(1 << 62)
	delivered := func() (n uint64) {
		for _, c := range r.conns {
			n += c.delivered.Load()
		}
		return n
	}
	want := uint64(conns * rounds)
	cpu0, reads0 := selfCPUTime(), selfReads(t)
	_, _ = io.WriteString(stdin, "go\n")
	deadline := time.Now().Add(time.Duration(rounds)*interval + 30*time.Second)
	for delivered() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	m := readerCost{deliveries: delivered(), cpu: selfCPUTime() - cpu0, reads: selfReads(t) - reads0, lat: r.e2eLat.Snapshot(), mem: memPerConn}
	r.finish()
	if r.reactors != nil {
		m.epollReads, m.epollWaits = r.reactors.stats()
	}
	if m.deliveries != want {
		t.Errorf("%s: %d deliveries, want %d", mode, m.deliveries, want)
	}
	return m
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func selfCPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfReads is this process's read syscalls so far (syscr).
func selfReads(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatalf("reading /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	t.Fatal("no syscr in /proc/self/io")
	return 0
}

// pumpMain is the pump process (TestMain runs it when pumpEnv is set): it
// prints its address, accepts connections and answers their connect and
// subscribe, and on "go" on stdin writes the rounds; it exits when stdin
// closes.
func pumpMain() {
	var conns, rounds int
	var interval time.Duration
	if _, err := fmt.Sscanf(os.Getenv(pumpEnv), "%d,%d,%d", &conns, &rounds, &interval); err != nil {
		fmt.Fprintln(os.Stderr, "pump:", err)
		os.Exit(1)
	}
	raiseFileLimit()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pump:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	ready := make(chan net.Conn, conns)
	var channel string
	chName := make(chan string, 1)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if _, err := ws.Upgrade(nc); err != nil {
					_ = nc.Close()
					return
				}
				for i, reply := range []string{`{"id":%d,"connect":{"client":"c","version":"pump"}}`, `{"id":%d,"subscribe":{"epoch":"e","offset":0}}`} {
					p, _, err := wsutil.ReadClientData(nc)
					if err != nil {
						_ = nc.Close()
						return
					}
					var cmd struct {
						ID        uint32 `json:"id"`
						Subscribe struct {
							Channel string `json:"channel"`
						} `json:"subscribe"`
					}
					_ = json.Unmarshal(p, &cmd)
					if i == 1 {
						select {
						case chName <- cmd.Subscribe.Channel:
						default:
						}
					}
					_ = wsutil.WriteServerText(nc, fmt.Appendf(nil, reply, cmd.ID))
				}
				ready <- nc
				_, _ = io.Copy(io.Discard, nc) // pongs, close frames
			}()
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return
	}
	channel = <-chName
	list := make([]net.Conn, 0, conns)
	for len(list) < conns {
		list = append(list, <-ready)
	}
	pad := strings.Repeat("x", 64)
	start := time.Now()
	var frame bytes.Buffer
	for round := 1; round <= rounds; round++ {
		if d := time.Until(start.Add(time.Duration(round-1) * interval)); d > 0 {
			time.Sleep(d)
		}
		for _, nc := range list {
			// Stamped per write: the delivery latency is this process's
			// write to the reader's handling.
			frame.Reset()
			line := fmt.Sprintf(`{"push":{"channel":%q,"pub":{"data":{"t":%d,"p":%q},"offset":%d}}}`, channel, time.Now().UnixNano(), pad, round)
			_ = ws.WriteFrame(&frame, ws.NewTextFrame([]byte(line)))
			_, _ = nc.Write(frame.Bytes())
		}
	}
	for in.Scan() {
	}
}
