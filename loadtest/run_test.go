package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestMain turns the test binary into a load-test worker when Run re-executes
// it (the default worker command is this executable), or into
// TestReaderCost's pump process.
func TestMain(m *testing.M) {
	if os.Getenv(pumpEnv) != "" {
		pumpMain() // TestReaderCost's pump process
		os.Exit(0)
	}
	if os.Getenv(WorkerEnv) == "1" {
		if err := WorkerMain(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testSecret = "test-secret"

// runScenario runs `scenario` with quick phases against url plus extra flags.
func runScenario(t *testing.T, url, scenario string, extra ...string) *Result {
	t.Helper()
	args := append([]string{scenario, "--url", url, "--secret", testSecret, "--warmup", "200ms",
		"--duration", "1500ms", "--drain", "400ms", "--connect-rate", "0", "--progress=false", "--timeout", "3s"}, extra...)
	cfg, err := ParseArgs(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), cfg, Options{Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		var sb strings.Builder
		res.WriteSummary(&sb)
		t.Log("\n" + sb.String())
	}
	return res
}

func assertClean(t *testing.T, res *Result) {
	t.Helper()
	d := res.Delivery
	if !d.Tracked || d.Lost != 0 || d.Duplicated != 0 || d.OutOfOrder != 0 || d.Expected == 0 || d.Received != d.Expected {
		t.Errorf("delivery %+v, want all of a non-zero expectation received", d)
	}
	if res.Throughput.PublishErrors != 0 {
		t.Errorf("publish errors: %d (%v)", res.Throughput.PublishErrors, res.ErrorSample)
	}
}

func TestRunBroadcast(t *testing.T) {
	s := newFakeServer(t, testSecret)
	res := runScenario(t, s.URL, ScenarioBroadcast, "--conns", "30", "--rate", "40", "--publishers", "2")
	assertClean(t, res)
	if res.Connections.Connected != 32 || res.Connections.ConnectFailed != 0 {
		t.Errorf("connections %+v", res.Connections)
	}
	l := res.Latency["publish_to_delivery"]
	if l.Count < 30*40 || l.P50 <= 0 || l.Max < l.P99 || res.Latency["publish_ack"].Count < 40 || res.Latency["connect"].Count != 32 {
		t.Errorf("latencies %+v", res.Latency)
	}
	if res.Throughput.DeliveriesPerS < 0.8*30*40 || res.Throughput.PublishesPerS < 0.8*40 {
		t.Errorf("throughput %+v", res.Throughput)
	}
	if s.pongs.Load() == 0 {
		t.Error("server pings were not answered")
	}
	if len(res.Timeline) == 0 {
		t.Error("no timeline")
	}
}

func TestRunDropHookReportsOneLost(t *testing.T) {
	s := newFakeServer(t, testSecret)
	res := runScenario(t, s.URL, ScenarioBroadcast, "--conns", "10", "--rate", "20", "--test-drop-delivery", "25")
	if res.Delivery.Lost != 1 || res.Delivery.DroppedHook != 1 || res.Delivery.Duplicated != 0 {
		t.Errorf("delivery %+v, want exactly 1 lost", res.Delivery)
	}
	if p := res.Problems(); len(p) != 1 || !strings.Contains(p[0], "1 deliveries lost") {
		t.Errorf("problems %v", p)
	}
}

func TestRunRecovery(t *testing.T) {
	for _, mode := range []string{"client-side", "server-side"} {
		t.Run(mode, func(t *testing.T) {
			s := newFakeServer(t, testSecret)
			extra := []string{"--conns", "20", "--channels", "4", "--rate", "100", "--duration", "2s",
				"--drop-fraction", "0.5", "--reconnect-delay", "300ms"}
			if mode == "server-side" {
				extra = append(extra, "--server-side")
			}
			res := runScenario(t, s.URL, ScenarioRecovery, extra...)
			assertClean(t, res)
			rc := res.Recovery
			if rc == nil || rc.Dropped != 10 || rc.Resubscribed != 10 || rc.Recovered != 10 || rc.NotRecovered != 0 || rc.RecoveredPubs == 0 {
				t.Errorf("recovery %+v", rc)
			}
		})
	}
}

func TestRunChatAndChurn(t *testing.T) {
	s := newFakeServer(t, testSecret)
	t.Run("chat", func(t *testing.T) {
		res := runScenario(t, s.URL, ScenarioChat, "--conns", "20", "--channels", "5", "--rate", "50")
		assertClean(t, res)
	})
	t.Run("churn", func(t *testing.T) {
		res := runScenario(t, s.URL, ScenarioChurn, "--conns", "20", "--channels", "4", "--rate", "30", "--churn-rate", "10")
		assertClean(t, res)
		if res.Connections.Churned < 10 || res.Connections.Attempted < 30 || res.Connections.AtEnd != 20 {
			t.Errorf("connections %+v", res.Connections)
		}
	})
}

func TestRunRefusedAndDownServer(t *testing.T) {
	t.Run("refused upgrades are counted", func(t *testing.T) {
		s := newFakeServer(t, testSecret)
		s.refuse.Store(5)
		res := runScenario(t, s.URL, ScenarioIdle, "--conns", "20", "--duration", "300ms")
		if res.Connections.Connected != 15 || res.Connections.ConnectFailed != 5 {
			t.Errorf("connections %+v", res.Connections)
		}
		if res.Errors["connect: handshake HTTP 503"] != 5 {
			t.Errorf("errors %v", res.Errors)
		}
	})
	t.Run("bad token is counted", func(t *testing.T) {
		s := newFakeServer(t, "other-secret")
		res := runScenario(t, s.URL, ScenarioIdle, "--conns", "5", "--duration", "300ms")
		if res.Connections.ConnectFailed != 5 || res.Errors["connect: connect rejected (3500)"] != 5 {
			t.Errorf("connections %+v errors %v", res.Connections, res.Errors)
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		res := runScenario(t, "ws://127.0.0.1:1/connection/websocket", ScenarioIdle, "--conns", "5", "--duration", "300ms")
		if res.Connections.ConnectFailed != 5 || res.Errors["connect: dial failed"] != 5 {
			t.Errorf("connections %+v errors %v", res.Connections, res.Errors)
		}
	})
	t.Run("server drops connections", func(t *testing.T) {
		s := newFakeServer(t, testSecret)
		cfg, err := ParseArgs([]string{ScenarioBroadcast, "--url", s.URL, "--secret", testSecret, "--warmup", "100ms",
			"--duration", "1500ms", "--drain", "400ms", "--connect-rate", "0", "--progress=false", "--conns", "10", "--rate", "50"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		go func() {
			// Kill every server-side socket once, mid-run: clients reconnect and recover.
			<-sleepChan(ctx, 900)
			s.mu.Lock()
			for c := range s.conns {
				_ = c.nc.Close()
			}
			s.mu.Unlock()
		}()
		res, err := Run(ctx, cfg, Options{Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		if res.Connections.Reconnects < 10 || res.Recovery == nil || res.Recovery.Recovered < 10 {
			t.Errorf("connections %+v recovery %+v errors %v", res.Connections, res.Recovery, res.Errors)
		}
		if d := res.Delivery; d.Lost != 0 || d.Duplicated != 0 {
			t.Errorf("delivery %+v", d)
		}
	})
}

func TestRunWorkersAndOutputs(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	s := newFakeServer(t, testSecret)
	res := runScenario(t, s.URL, ScenarioBroadcast, "--conns", "40", "--rate", "20", "--publishers", "3", "--workers", "2",
		"--test-drop-delivery", "10", "--server-pid", fmt.Sprint(os.Getpid()))
	if res.Processes != 2 || res.Connections.Connected != 43 || res.Connections.ConnectFailed != 0 {
		t.Fatalf("processes %d connections %+v errors %v", res.Processes, res.Connections, res.ErrorSample)
	}
	if res.Delivery.Lost != 1 || res.Delivery.Duplicated != 0 {
		t.Errorf("delivery %+v, want exactly 1 lost (hook in worker 0 only)", res.Delivery)
	}
	if res.Server == nil || res.Server.RSSMax == 0 {
		t.Errorf("server stats %+v", res.Server)
	}

	dir := t.TempDir()
	jp, hp := filepath.Join(dir, "r.json"), filepath.Join(dir, "sub", "r.html")
	if err := WriteOutputs(res, jp, hp); err != nil {
		t.Fatal(err)
	}
	var back Result
	b, _ := os.ReadFile(jp)
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Connections.Connected != 43 || back.Histograms["publish_to_delivery"].Count() != res.Histograms["publish_to_delivery"].Count() {
		t.Errorf("JSON round trip lost data")
	}
	if strings.Contains(string(b), testSecret) {
		t.Error("secret written to results")
	}
	h, _ := os.ReadFile(hp)
	page := string(h)
	for _, want := range []string{"<svg", "Latency CDF", "Deliveries", "Server RSS against connections", "<polyline"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "src=", "href=", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("report not self-contained: has %q", bad)
		}
	}
}

// TestRunSeveralEndpoints: --url with two endpoints (one server state
// behind two listeners, as two relays of one deployment): the connections
// split evenly between them, every channel has members on both, and
// every publication reaches every member.
func TestRunSeveralEndpoints(t *testing.T) {
	s := newFakeServer(t, testSecret)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var second atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		second.Add(1)
		s.handle(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url2 := "ws://" + ln.Addr().String() + "/connection/websocket"

	const conns, channels = 20, 5
	cfg, err := ParseArgs([]string{ScenarioChat, "--url", s.URL + "," + url2, "--conns", "20", "--channels", "5", "--secret", testSecret}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(cfg, plan{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cancel()
		if r.reactors != nil {
			r.reactors.close()
		}
	})
	hosts := map[int]map[string]bool{}
	for i := range conns {
		c, err := r.newConn(i, "t", i%channels)
		if err != nil {
			t.Fatal(err)
		}
		if hosts[i%channels] == nil {
			hosts[i%channels] = map[string]bool{}
		}
		hosts[i%channels][c.url] = true
	}
	for ch, h := range hosts {
		if len(h) != 2 {
			t.Errorf("channel %d has members on %v, want both endpoints", ch, h)
		}
	}

	res := runScenario(t, s.URL+", "+url2, ScenarioChat, "--conns", "20", "--channels", "5", "--rate", "50")
	assertClean(t, res)
	if n, total := second.Load(), s.accepted.Load(); n != conns/2 || total != conns {
		t.Errorf("second endpoint took %d of %d connections, want %d of %d", n, total, conns/2, conns)
	}
	if _, err := ParseArgs([]string{ScenarioChat, "--url", s.URL + ",http://x", "--secret", testSecret}, io.Discard); err == nil || !strings.Contains(err.Error(), `"http://x"`) {
		t.Errorf("a bad second endpoint: %v, want an error naming it", err)
	}
}
