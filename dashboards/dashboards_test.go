package dashboards

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/devstack/devstacktest"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/testutil"
)

// The Grafana variables of the dashboards and what the test queries instead.
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "1m",
	"$__rate_interval", "1m",
	"${__interval}", "15s",
	"$__interval", "15s",
	"${__range}", "5m",
	"$__range", "5m",
	"${instance}", ".*",
	"$instance", ".*",
	"${job}", "herald-.*",
	"$job", "herald-.*",
)

// services are the scrape jobs of the stack, named as in prometheus.yml.
var services = []string{"relay", "controller", "management", "cacher"}

type panelExpr struct {
	where string // file / panel title / refId
	expr  string
}

// TestDashboardsAgainstPrometheus is the proof of the dashboards: promtool
// accepts the scrape config and the rules, and against a real Prometheus
// scraping the dev stack after traffic through every service, every panel
// expression returns data and every alert expression evaluates.
func TestDashboardsAgainstPrometheus(t *testing.T) {
	prom, promtool := mustLookPath(t, "prometheus"), mustLookPath(t, "promtool")
	// The embedded S3 changes the working directory: absolute paths first.
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "config", filepath.Join(dir, "prometheus.yml")},
		{"check", "rules", filepath.Join(dir, "alerts.yml")},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exprs := loadPanelExprs(t, dir)

	// A small outbound cap so a client that never reads is disconnected
	// (3008) after a few hundred KB instead of 4 MB.
	t.Setenv("HERALD_RELAY_OUTBOUND_CAP", strconv.Itoa(256<<10))
	// chat: channels have presence and join/leave (the presence panels).
	t.Setenv("HERALD_CHANNEL_NAMESPACES", `{"chat":{"presence":true,"join_leave":true}}`)
	st := startStack(t)
	p := startPrometheus(t, prom, filepath.Join(dir, "alerts.yml"), st)

	// Every target scraped before the traffic, so counters and histograms
	// have a sample before it and rates see it; a few scrapes after it.
	p.waitFor(t, "4 targets up", 20*time.Second, func() bool {
		r, err := p.query(`up{job=~"herald-.*"} == 1`)
		return err == nil && len(r) == len(services)
	})
	driveTraffic(t, st)
	time.Sleep(3 * time.Second)

	// Renaming a metric without the dashboards following must fail even
	// where an expression would still return data (`x or vector(0)`).
	// Alert rules as Prometheus loaded them.
	rules := p.rules(t)
	if len(rules) == 0 {
		t.Fatal("Prometheus loaded no alert rules")
	}
	names := p.metricNames(t)
	nameRE := regexp.MustCompile(`\b(herald_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)\b`)
	checkNames := func(where, expr string) {
		for _, n := range nameRE.FindAllString(expr, -1) {
			if !names[n] {
				t.Errorf("%s: metric %s is not exported by any service (renamed?)\n  expr: %s", where, n, expr)
			}
		}
	}
	used := map[string]bool{}
	for _, e := range exprs {
		checkNames(e.where, e.expr)
		for _, n := range nameRE.FindAllString(e.expr, -1) {
			used[n] = true
		}
	}
	// The other way round: a herald_* metric no panel shows is a metric an
	// operator cannot see; add a panel (the dashboards grow with the code).
	for n := range names {
		if !strings.HasPrefix(n, "herald_") {
			continue
		}
		base := n
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suf)
		}
		if !used[n] && !used[base+"_bucket"] && !used[base+"_count"] && !used[base+"_sum"] {
			t.Errorf("metric %s is exported but no dashboard panel uses it", n)
		}
	}
	for _, r := range rules {
		checkNames("alert "+r.Name, r.Query)
	}

	for _, e := range exprs {
		q := grafanaVars.Replace(e.expr)
		res, err := p.query(q)
		switch {
		case err != nil:
			t.Errorf("%s: query error: %v\n  expr: %s", e.where, err, q)
		case !hasValue(res):
			t.Errorf("%s: no data\n  expr: %s\n  result: %v", e.where, q, res)
		case testing.Verbose():
			t.Logf("%s: %d series, first %v %v", e.where, len(res), res[0].Metric, res[0].Value[1])
		}
	}

	// Alert rules evaluate without error and each expression is a valid query.
	for _, r := range rules {
		if r.Health == "err" {
			t.Errorf("alert %s: evaluation error: %s", r.Name, r.LastError)
		}
		if _, err := p.query(r.Query); err != nil {
			t.Errorf("alert %s: query error: %v\n  expr: %s", r.Name, err, r.Query)
		}
	}

	// The slow consumer really was disconnected with 3008.
	if res, err := p.query(`sum(herald_relay_disconnects_total{code="3008"}) > 0`); err != nil || len(res) == 0 {
		t.Errorf("no 3008 disconnect recorded (err %v)", err)
	}
	t.Logf("%d panel expressions and %d alert rules checked", len(exprs), len(rules))
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (apt-get install prometheus): %v", name, err)
	}
	return p
}

// loadPanelExprs returns every targets[].expr of every panel (rows' nested
// panels included) of every dashboard in dir, and checks the dashboards'
// shape: the expected files, a uid, and an expression on every panel.
func loadPanelExprs(t *testing.T, dir string) []panelExpr {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	for _, want := range []string{"overview.json", "relay.json", "controller.json", "management.json", "cacher.json"} {
		if !slices.Contains(got, want) {
			t.Errorf("dashboard %s missing (have %v)", want, got)
		}
	}
	type panel struct {
		Title   string  `json:"title"`
		Type    string  `json:"type"`
		Panels  []panel `json:"panels"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	var out []panelExpr
	uids := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string  `json:"uid"`
			Title  string  `json:"title"`
			Panels []panel `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid and title are required", name)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q already used by %s", name, d.UID, other)
		}
		uids[d.UID] = name
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				walk(p.Panels)
				if p.Type == "row" {
					continue
				}
				n := 0
				for _, tg := range p.Targets {
					if strings.TrimSpace(tg.Expr) == "" {
						continue
					}
					n++
					out = append(out, panelExpr{where: fmt.Sprintf("%s / %q / %s", name, p.Title, tg.RefID), expr: tg.Expr})
				}
				if n == 0 {
					t.Errorf("%s: panel %q has no expression", name, p.Title)
				}
			}
		}
		walk(d.Panels)
	}
	if len(out) == 0 {
		t.Fatal("no panel expressions found")
	}
	return out
}

func startStack(t *testing.T) *devstack.Stack {
	t.Helper()
	return devstacktest.Start(t, func(o *devstack.Options) {
		o.TokenSecret = "dashboards-secret"
		o.ChunkSize, o.MinAge = 4, 0
		o.Interval = time.Hour // only the explicit trigger archives
	})
}

// --- Prometheus -------------------------------------------------------------

type prometheus struct {
	base string
}

// startPrometheus runs prom scraping the stack's four admin endpoints every
// second, with alertsFile as its rule file.
func startPrometheus(t *testing.T, prom, alertsFile string, st *devstack.Stack) *prometheus {
	t.Helper()
	tmp := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n")
	fmt.Fprintf(&cfg, "rule_files:\n  - %q\n", alertsFile)
	fmt.Fprintf(&cfg, "scrape_configs:\n")
	for _, svc := range services {
		u, err := url.Parse(st.Admin[svc])
		if err != nil || u.Host == "" {
			t.Fatalf("admin address of %s: %q", svc, st.Admin[svc])
		}
		fmt.Fprintf(&cfg, "  - job_name: herald-%s\n    static_configs:\n      - targets: [%q]\n", svc, u.Host)
	}
	cfgFile := filepath.Join(tmp, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var logs testutil.LockedBuffer
	cmd := exec.Command(prom,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(tmp, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus config:\n%s\nprometheus log:\n%s", cfg.String(), logs.String())
		}
	})
	p := &prometheus{base: "http://" + addr}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("prometheus exited: %s", logs.String())
		default:
		}
		if resp, err := http.Get(p.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 20s: %s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query; it returns an error when Prometheus rejects or
// fails it. Scalars come back as one sample.
func (p *prometheus) query(q string) ([]sample, error) {
	resp, err := http.PostForm(p.base+"/api/v1/query", url.Values{"query": {q}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", body, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", resp.Status, r.Error)
	}
	if len(r.Warnings) > 0 {
		return nil, fmt.Errorf("warnings: %v", r.Warnings)
	}
	switch r.Data.ResultType {
	case "vector":
		var s []sample
		err := json.Unmarshal(r.Data.Result, &s)
		return s, err
	case "scalar":
		var v [2]any
		err := json.Unmarshal(r.Data.Result, &v)
		return []sample{{Value: v}}, err
	default:
		return nil, fmt.Errorf("result type %s, want an instant vector or scalar", r.Data.ResultType)
	}
}

// hasValue reports whether a sample holds a number (not NaN): a panel with
// only NaN shows nothing.
func hasValue(res []sample) bool {
	for _, s := range res {
		str, _ := s.Value[1].(string)
		if v, err := strconv.ParseFloat(str, 64); err == nil && !math.IsNaN(v) {
			return true
		}
	}
	return false
}

func (p *prometheus) waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// metricNames returns the names of every series Prometheus holds.
func (p *prometheus) metricNames(t *testing.T) map[string]bool {
	t.Helper()
	var r struct {
		Data []string `json:"data"`
	}
	getJSON(t, p.base+"/api/v1/label/__name__/values", "", &r)
	names := map[string]bool{}
	for _, n := range r.Data {
		names[n] = true
	}
	return names
}

type rule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// rules returns the loaded alerting rules once each has been evaluated.
func (p *prometheus) rules(t *testing.T) []rule {
	t.Helper()
	var out []rule
	p.waitFor(t, "alert rules evaluated", 10*time.Second, func() bool {
		var r struct {
			Data struct {
				Groups []struct {
					Rules []rule `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		getJSON(t, p.base+"/api/v1/rules?type=alert", "", &r)
		out = out[:0]
		for _, g := range r.Data.Groups {
			for _, rl := range g.Rules {
				if rl.Health == "unknown" {
					return false
				}
				out = append(out, rl)
			}
		}
		return len(out) > 0
	})
	return out
}

// --- traffic ----------------------------------------------------------------

// driveTraffic exercises every service: connections and publishes (relay,
// controller), history reads before and after an archive run (management,
// cacher, S3), and a slow consumer the relay disconnects with 3008.
func driveTraffic(t *testing.T, st *devstack.Stack) {
	t.Helper()
	const channel = "chat:metrics"
	const n = 10 // two full chunks of 4 and a partial one
	alice, _ := connectClient(t, st, token(t, st.TokenSecret, "alice", []string{channel}, nil), channel)
	_, bob := connectClient(t, st, token(t, st.TokenSecret, "bob", []string{channel}, nil), channel)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; i <= n; i++ {
		if _, err := alice.Publish(ctx, channel, fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	bob.waitFor(t, n)
	// Presence (the members are alice and bob: their joins were events).
	if _, err := alice.Presence(ctx, channel); err != nil {
		t.Fatalf("presence: %v", err)
	}
	if st, err := alice.PresenceStats(ctx, channel); err != nil || st.NumClients != 2 {
		t.Fatalf("presence_stats: %+v, %v", st, err)
	}

	bearer := token(t, st.TokenSecret, "bob", []string{channel}, nil)
	hist := st.ManagementURL + "/v1/channels/" + url.PathEscape(channel) + "/messages?limit=3&order=asc"
	deadline := time.Now().Add(20 * time.Second)
	for walkHistory(t, hist, bearer) < n {
		if time.Now().After(deadline) {
			t.Fatalf("history does not hold %d messages after 20s", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := getJSON(t, hist, "", nil); code != http.StatusUnauthorized {
		t.Errorf("history without token: status %d, want 401", code)
	}
	runArchive(t, st)
	for range 2 { // S3 reads, then chunk-cache hits
		if got := walkHistory(t, hist, bearer); got != n {
			t.Fatalf("history after archive: %d messages, want %d", got, n)
		}
	}

	slowConsumer(t, st)
	serverAPI(t, st, channel+"-api")

	// Prometheus sees a new series' first increments only as its first
	// sample: read history again a couple of scrapes later so request rates
	// (created by the first reads) move.
	for range 2 {
		time.Sleep(1500 * time.Millisecond)
		if got := walkHistory(t, hist, bearer); got != n {
			t.Fatalf("history: %d messages, want %d", got, n)
		}
		serverAPI(t, st, channel+"-api")
	}
}

// serverAPI calls the dev stack's (open) server API: an idempotent publish
// sent twice (the controller skips the repeat), channels (a command on the
// relays) and an unknown method (an error result).
func serverAPI(t *testing.T, st *devstack.Stack, channel string) {
	t.Helper()
	for _, c := range []struct{ method, body string }{
		{"publish", `{"channel":"` + channel + `","data":{"api":true},"idempotency_key":"dash-1"}`},
		{"publish", `{"channel":"` + channel + `","data":{"api":true},"idempotency_key":"dash-1"}`},
		{"channels", `{}`},
		{"no_such_method", `{}`},
	} {
		resp, err := http.Post(st.ManagementURL+"/api/"+c.method, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatalf("server API %s: %v", c.method, err)
		}
		resp.Body.Close()
	}
}

func token(t testing.TB, secret, user string, channels []string, caps []auth.Capability) string {
	t.Helper()
	c := auth.NewClaims(user, channels, time.Hour)
	c.Caps = caps
	tok, err := auth.Sign(secret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type counter struct {
	mu sync.Mutex
	n  int
	ch chan struct{}
}

func (c *counter) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		c.mu.Lock()
		got := c.n
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("received %d publications, want %d", got, n)
		}
	}
}

// connectClient connects a centrifuge-go client and waits for its
// server-side subscriptions.
func connectClient(t *testing.T, st *devstack.Stack, tok string, channels ...string) (*centrifuge.Client, *counter) {
	t.Helper()
	c := centrifuge.NewJsonClient(st.RelayURL, centrifuge.Config{Token: tok})
	rec := &counter{ch: make(chan struct{}, 1)}
	subscribed := make(chan string, len(channels))
	c.OnPublication(func(centrifuge.ServerPublicationEvent) {
		rec.mu.Lock()
		rec.n++
		rec.mu.Unlock()
		select {
		case rec.ch <- struct{}{}:
		default:
		}
	})
	c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) { subscribed <- e.Channel })
	connected := make(chan struct{})
	var once sync.Once
	c.OnConnected(func(centrifuge.ConnectedEvent) { once.Do(func() { close(connected) }) })
	if err := c.Connect(); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	select {
	case <-connected:
	case <-time.After(15 * time.Second):
		t.Fatalf("not connected after 15s (state %v)", c.State())
	}
	for range channels {
		select {
		case <-subscribed:
		case <-time.After(15 * time.Second):
			t.Fatalf("server-side subscriptions not active after 15s")
		}
	}
	return c, rec
}

// walkHistory pages through the history at first (a URL with limit and
// order) and returns how many messages it served.
func walkHistory(t *testing.T, first, bearer string) int {
	t.Helper()
	total, u := 0, first
	for range 1000 {
		var p struct {
			Messages   []json.RawMessage `json:"messages"`
			NextCursor string            `json:"next_cursor"`
		}
		switch code := getJSON(t, u, bearer, &p); code {
		case http.StatusOK:
		case http.StatusNotFound: // channel not persisted yet
			return total
		default:
			t.Fatalf("GET %s: status %d", u, code)
		}
		total += len(p.Messages)
		if p.NextCursor == "" {
			return total
		}
		u = first + "&cursor=" + url.QueryEscape(p.NextCursor)
	}
	t.Fatal("history did not end after 1000 pages")
	return 0
}

func runArchive(t *testing.T, st *devstack.Stack) {
	testutil.RunArchive(t, st.CacherURL, 30*time.Second)
}

// slowConsumer connects a raw WebSocket client with a tiny receive buffer,
// waits for its first push, then never reads again while a publisher floods
// its channel, until the relay disconnects it as slow.
func slowConsumer(t *testing.T, st *devstack.Stack) {
	t.Helper()
	const channel = "flood:slow"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialer := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		return d.DialContext(ctx, network, addr)
	}}
	conn, br, _, err := dialer.Dial(ctx, st.RelayURL)
	if err != nil {
		t.Fatalf("slow consumer: dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if br != nil {
		ws.PutReader(br)
	}
	cmd := fmt.Sprintf(`{"id":1,"connect":{"token":%q,"name":"slow"}}`, token(t, st.TokenSecret, "slow", []string{channel}, nil))
	if err := wsutil.WriteClientText(conn, []byte(cmd)); err != nil {
		t.Fatalf("slow consumer: connect: %v", err)
	}
	// Publisher: may publish to the channel, subscribed to nothing.
	pub, _ := connectClient(t, st, token(t, st.TokenSecret, "flooder", nil,
		[]auth.Capability{{Channels: []string{channel}, Allow: []string{auth.AllowPublish}}}))
	payload := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 16<<10))

	// Read until the first push arrives: the subscription is live.
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	first := make(chan error, 1)
	go func() {
		for {
			b, err := wsutil.ReadServerText(conn)
			if err != nil {
				first <- err
				return
			}
			if bytes.Contains(b, []byte(`"push"`)) {
				first <- nil
				return
			}
		}
	}()
	for live := false; !live; {
		if _, err := pub.Publish(ctx, channel, payload); err != nil {
			t.Fatalf("flood publish: %v", err)
		}
		select {
		case err := <-first:
			if err != nil {
				t.Fatalf("slow consumer: waiting for the first push: %v", err)
			}
			live = true
		case <-time.After(200 * time.Millisecond):
		}
	}

	// Flood from a few goroutines until the relay counts a slow disconnect.
	relayMetrics := st.Admin["relay"] + "/metrics"
	var published atomic.Int64
	for round := 0; ; round++ {
		if slowDisconnects(t, relayMetrics) > 0 {
			t.Logf("slow consumer disconnected after %d flood publishes", published.Load())
			return
		}
		if round == 200 {
			t.Fatalf("no slow-consumer disconnect after %d publishes of %d bytes", published.Load(), len(payload))
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 4 {
					if _, err := pub.Publish(ctx, channel, payload); err != nil {
						t.Errorf("flood publish: %v", err)
						return
					}
					published.Add(1)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
}

// slowDisconnects reads herald_relay_slow_consumer_disconnects_total from
// the relay's /metrics.
func slowDisconnects(t *testing.T, metricsURL string) float64 {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatalf("GET %s: %v", metricsURL, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "herald_relay_slow_consumer_disconnects_total "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("%s: herald_relay_slow_consumer_disconnects_total not exported", metricsURL)
	return 0
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := devstack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

var getJSON = testutil.GetJSON
