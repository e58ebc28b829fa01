// Package clustertest runs Herald as a real deployment on one machine: every
// service is its own `herald` process (2 relays, 2 controllers, management,
// cacher), nginx (deploy/nginx.conf) balances the WebSocket clients over the
// relays, and the tests drive it with the official centrifuge-go SDK through
// nginx's port only while they kill, stop and restart pieces.
//
// Engines run in the test process: kfake (restartable on its port, with a
// low group minimum session timeout so a crashed controller's partitions move
// within seconds), the SQLite store file shared by the processes, and one
// versitygw for the whole package (only one can run per process).
//
// nginx is required: the tests fail, not skip, when it is missing (Debian
// package nginx-light; .ci/run installs it). HERALD_CLUSTER_TEST_BIN points
// the tests at a prebuilt herald binary instead of building one.
package clustertest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/engines/kfake"
	"github.com/herald-chat/herald/internal/engines/s3local"
	"github.com/herald-chat/herald/internal/store/storeopen"
)

const (
	tokenSecret = "cluster-test-secret"
	s3Access    = "herald"
	s3Secret    = "herald-cluster-test-s3-secret"
	topic       = "herald.messages"
	partitions  = 6
	// sessionTimeout of the controllers' consumer group: how long a killed
	// controller keeps its partitions.
	sessionTimeout = 2 * time.Second
)

var (
	heraldBin  string // absolute path of the herald binary under test
	nginxBin   string
	nginxTmpl  string // deploy/nginx.conf
	s3Endpoint string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "FAIL clustertest: "+format+"\n", args...)
		return 1
	}
	nginxBin = findNginx()
	if nginxBin == "" {
		return fail("nginx not found in PATH or /usr/sbin: install it (apt-get install nginx-light)")
	}
	tmpl, err := os.ReadFile("../nginx.conf")
	if err != nil {
		return fail("reading the nginx template: %v", err)
	}
	nginxTmpl = string(tmpl)

	dir, err := os.MkdirTemp("", "herald-clustertest-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)

	if heraldBin = os.Getenv("HERALD_CLUSTER_TEST_BIN"); heraldBin != "" {
		if heraldBin, err = filepath.Abs(heraldBin); err != nil {
			return fail("%v", err)
		}
	} else {
		heraldBin = filepath.Join(dir, "herald")
		build := exec.Command("go", "build", "-o", heraldBin, "github.com/herald-chat/herald/cmd/herald")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fail("building herald: %v", err)
		}
	}

	// versitygw changes the working directory: every path is absolute now.
	s3, err := s3local.Start(context.Background(), s3local.Options{
		Addr: "127.0.0.1:0", Dir: filepath.Join(dir, "s3"), AccessKey: s3Access, SecretKey: s3Secret,
	})
	if err != nil {
		return fail("starting S3: %v", err)
	}
	defer s3.Close()
	s3Endpoint = s3.Endpoint()
	return m.Run()
}

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// freePort returns a free port outside the ephemeral range (see
// devstack.FreeAddr), so outgoing connections cannot take it before the
// child process binds it.
func freePort(t testing.TB) int {
	t.Helper()
	addr, err := devstack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return port
}

// --- processes ---------------------------------------------------------------

// proc is one child process that can be killed and started again with the
// same command line (same ports).
type proc struct {
	name  string
	args  []string
	env   []string
	admin string // admin host:port (/readyz); empty for nginx
	log   string // log file (appended to by every run)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current run exited
}

func (p *proc) start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			t.Fatalf("%s: already running", p.name)
		}
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== %s start %s\n", p.name, time.Now().Format(time.StampMilli))
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: starting: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig and, when wait > 0, waits that long for the exit.
func (p *proc) signal(sig syscall.Signal, wait time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(sig)
	if wait <= 0 {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s did not exit %s after %v", p.name, wait, sig)
	}
}

func (p *proc) kill9() {
	_ = p.signal(syscall.SIGKILL, 10*time.Second)
}

// stop is a graceful stop: SIGTERM, then SIGKILL after timeout.
func (p *proc) stop(timeout time.Duration) error {
	if err := p.signal(syscall.SIGTERM, timeout); err != nil {
		p.kill9()
		return err
	}
	return nil
}

// waitReady polls the admin /readyz until it answers 200.
func (p *proc) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !p.running() {
			t.Fatalf("%s exited while starting; log:\n%s", p.name, tail(p.log, 30))
		}
		if p.admin == "" {
			return
		}
		last = httpOK("http://" + p.admin + "/readyz")
		if last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %v: %v; log:\n%s", p.name, timeout, last, tail(p.log, 30))
}

func httpOK(u string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", u, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// --- the cluster -------------------------------------------------------------

type cluster struct {
	t   *testing.T
	dir string

	kafkaMu   sync.Mutex
	kafka     *kfake.Kafka
	kafkaPort int

	controllers []*proc
	relays      []*proc
	management  *proc
	cacher      *proc
	nginx       *proc

	wsURL    string // ws://nginx/connection/websocket
	httpBase string // http://nginx
	bucket   string
}

// startCluster starts the engines, 2 controllers, management, cacher, 2
// relays and nginx, and waits until all are ready. Cleanup stops them.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), kafkaPort: freePort(t)}
	c.bucket = strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	t.Cleanup(c.stopAll)

	c.startKafka()
	storePath := filepath.Join(c.dir, "herald.db")
	// Create the store's schema once, before four processes open it.
	st, err := storeopen.Open(context.Background(), storePath)
	if err != nil {
		t.Fatalf("creating the store: %v", err)
	}
	_ = st.Close()

	base := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			base = append(base, kv)
		}
	}
	base = append(base,
		"HERALD_LOG_LEVEL=info",
		"HERALD_KAFKA_BROKERS="+fmt.Sprintf("127.0.0.1:%d", c.kafkaPort),
		"HERALD_KAFKA_TOPIC="+topic,
		fmt.Sprintf("HERALD_KAFKA_PARTITIONS=%d", partitions),
		"HERALD_STORE_URI="+storePath,
		"HERALD_S3_ENDPOINT="+s3Endpoint, "HERALD_S3_BUCKET="+c.bucket,
		"HERALD_S3_ACCESS_KEY="+s3Access, "HERALD_S3_SECRET_KEY="+s3Secret,
		"HERALD_TOKEN_SECRET="+tokenSecret,
	)
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }
	newProc := func(name string, env []string, admin string, args ...string) *proc {
		return &proc{
			name: name, args: append([]string{heraldBin}, args...),
			env: append(append([]string{}, base...), env...), admin: admin,
			log: filepath.Join(c.dir, name+".log"),
		}
	}

	var ctrlAddrs []string
	for i := 1; i <= 2; i++ {
		a, adm := addr(), addr()
		ctrlAddrs = append(ctrlAddrs, a)
		c.controllers = append(c.controllers, newProc(fmt.Sprintf("controller-%d", i), []string{
			fmt.Sprintf("HERALD_CONTROLLER_ID=controller-%d", i),
			"HERALD_CONTROLLER_SESSION_TIMEOUT=" + sessionTimeout.String(),
		}, adm, "controller", "-controller-addr", a, "-controller-admin-addr", adm))
	}
	mgmtAddr, mgmtAdmin := addr(), addr()
	c.management = newProc("management", nil, mgmtAdmin, "management", "-management-addr", mgmtAddr, "-management-admin-addr", mgmtAdmin, "-management-api=false")
	cacherAddr, cacherAdmin := addr(), addr()
	c.cacher = newProc("cacher", []string{"HERALD_ARCHIVE_INTERVAL=1h"}, cacherAdmin, "cacher", "-cacher-addr", cacherAddr, "-cacher-admin-addr", cacherAdmin)
	var servers strings.Builder
	for i := 1; i <= 2; i++ {
		a, adm := addr(), addr()
		fmt.Fprintf(&servers, "server %s max_fails=0; ", a)
		c.relays = append(c.relays, newProc(fmt.Sprintf("relay-%d", i), []string{
			"HERALD_CONTROLLERS=" + strings.Join(ctrlAddrs, ","),
			"HERALD_MANAGEMENT_URL=http://" + mgmtAddr,
			fmt.Sprintf("HERALD_RELAY_ID=relay-%d", i),
			"HERALD_RELAY_MULTICORE=false", // two cores shared by everything here
			// A short drain keeps the rolling restart quick; a publish Kafka
			// does not ack within 2s is answered with an error (the clients
			// wait 5s).
			"HERALD_RELAY_DRAIN_WINDOW=2s",
			"HERALD_RELAY_PUBLISH_TIMEOUT=2s",
		}, adm, "relay", "-relay-addr", a, "-relay-admin-addr", adm))
	}

	for _, p := range c.controllers {
		p.start(t)
	}
	c.management.start(t)
	c.cacher.start(t)
	for _, p := range c.controllers {
		p.waitReady(t, 60*time.Second)
	}
	for _, p := range c.relays {
		p.start(t)
	}
	for _, p := range append([]*proc{c.management, c.cacher}, c.relays...) {
		p.waitReady(t, 60*time.Second)
	}

	// nginx from the template, unprivileged paths under the test directory.
	run := filepath.Join(c.dir, "nginx")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	listen := addr()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	grp := u.Username
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		grp = g.Name
	}
	conf := strings.NewReplacer(
		"@RUN_DIR@", run, "@USER@", u.Username+" "+grp, "@LISTEN@", listen,
		"@RELAY_SERVERS@", servers.String(), "@MANAGEMENT@", mgmtAddr,
	).Replace(nginxTmpl)
	confPath := filepath.Join(run, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.nginx = &proc{
		name: "nginx", log: filepath.Join(c.dir, "nginx.log"), env: os.Environ(),
		args: []string{nginxBin, "-p", run, "-c", confPath, "-e", filepath.Join(run, "error.log")},
	}
	c.nginx.start(t)
	deadline := time.Now().Add(10 * time.Second)
	for httpOK("http://"+listen+"/nginx_status") != nil {
		if time.Now().After(deadline) || !c.nginx.running() {
			t.Fatalf("nginx did not come up; log:\n%s\n%s", tail(c.nginx.log, 20), tail(filepath.Join(run, "error.log"), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.wsURL = "ws://" + listen + "/connection/websocket"
	c.httpBase = "http://" + listen
	return c
}

func (c *cluster) startKafka() {
	c.t.Helper()
	c.kafkaMu.Lock()
	defer c.kafkaMu.Unlock()
	var err error
	// The port was just released by the previous run: retry briefly.
	for attempt := 0; attempt < 50; attempt++ {
		c.kafka, err = kfake.Start(context.Background(), kfake.Options{
			Port: c.kafkaPort, DataDir: filepath.Join(c.dir, "kafka"),
			Topic: topic, Partitions: partitions,
			GroupMinSessionTimeout: 500 * time.Millisecond,
		})
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("starting kafka on port %d: %v", c.kafkaPort, err)
}

func (c *cluster) stopKafka() {
	c.kafkaMu.Lock()
	defer c.kafkaMu.Unlock()
	if c.kafka != nil {
		c.kafka.Close()
		c.kafka = nil
	}
}

func (c *cluster) all() []*proc {
	var out []*proc
	if c.nginx != nil {
		out = append(out, c.nginx)
	}
	out = append(out, c.relays...)
	for _, p := range []*proc{c.management, c.cacher} {
		if p != nil {
			out = append(out, p)
		}
	}
	return append(out, c.controllers...)
}

// stopAll stops everything (nginx, relays, management and cacher, controllers,
// Kafka) and, when the test failed, logs the tail of every process log.
func (c *cluster) stopAll() {
	var wg sync.WaitGroup
	for _, tier := range [][]*proc{{c.nginx}, c.relays, {c.management, c.cacher}, c.controllers} {
		for _, p := range tier {
			if p == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.stop(15 * time.Second); err != nil {
					c.t.Errorf("graceful stop: %v", err)
				}
			}()
		}
		wg.Wait()
	}
	c.stopKafka()
	if c.t.Failed() {
		c.keepLogs()
		for _, p := range c.all() {
			c.t.Logf("--- last lines of %s:\n%s", p.name, tail(p.log, 40))
		}
		c.t.Logf("--- nginx error.log:\n%s", tail(filepath.Join(c.dir, "nginx", "error.log"), 20))
	}
}

// keepLogs copies the logs of a failed test out of its temporary directory
// (HERALD_CLUSTER_TEST_LOGS, default the system temp directory).
func (c *cluster) keepLogs() {
	base := os.Getenv("HERALD_CLUSTER_TEST_LOGS")
	if base == "" {
		base = os.TempDir()
	}
	dst := filepath.Join(base, fmt.Sprintf("herald-clustertest-%s-%s", c.bucket, time.Now().Format("150405")))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		c.t.Logf("keeping logs: %v", err)
		return
	}
	files, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
	files = append(files, filepath.Join(c.dir, "nginx", "error.log"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			name := filepath.Base(f)
			if strings.Contains(f, string(filepath.Separator)+"nginx"+string(filepath.Separator)) {
				name = "nginx-" + name
			}
			_ = os.WriteFile(filepath.Join(dst, name), b, 0o644)
		}
	}
	c.t.Logf("logs kept in %s", dst)
}

// metric reads an unlabelled gauge or counter from a service's /metrics.
func metric(t testing.TB, p *proc, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var v float64
		if _, err := fmt.Sscanf(sc.Text(), name+" %g", &v); err == nil {
			return int(v)
		}
	}
	t.Fatalf("%s: %s not in /metrics", p.name, name)
	return 0
}

func relayConnections(t testing.TB, p *proc) int {
	return metric(t, p, "herald_relay_connections")
}

func ownedPartitions(t testing.TB, p *proc) int {
	return metric(t, p, "herald_controller_owned_partitions")
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- REST through nginx --------------------------------------------------------

type historyMessage struct {
	Seq  uint64          `json:"seq"`
	Data json.RawMessage `json:"data"`
	ID   string          `json:"id"`
}

// history reads the whole history of ch through nginx, oldest first.
func (c *cluster) history(ch string) ([]historyMessage, error) {
	tok := adminToken(c.t)
	var out []historyMessage
	cursor := ""
	hc := http.Client{Timeout: 10 * time.Second}
	for page := 0; page < 1000; page++ {
		q := url.Values{"limit": {"1000"}, "order": {"asc"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		req, _ := http.NewRequest(http.MethodGet, c.httpBase+"/v1/channels/"+url.PathEscape(ch)+"/messages?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound && page == 0 {
			return nil, nil // not persisted yet
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("history of %s: %d %s", ch, resp.StatusCode, body)
		}
		var p struct {
			Messages   []historyMessage `json:"messages"`
			NextCursor string           `json:"next_cursor"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, fmt.Errorf("history of %s: %v", ch, err)
		}
		out = append(out, p.Messages...)
		if p.NextCursor == "" {
			return out, nil
		}
		cursor = p.NextCursor
	}
	return nil, errors.New("history did not end after 1000 pages")
}

func adminToken(t testing.TB) string {
	cl := auth.NewClaims("admin", nil, time.Hour)
	cl.Admin = true
	tok, err := auth.Sign(tokenSecret, cl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
