package loadtest

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// ErrUsage marks errors caused by bad arguments; `herald loadtest` exits 2 on
// them.
var ErrUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// Scenario names.
const (
	ScenarioIdle      = "idle"
	ScenarioBroadcast = "broadcast"
	ScenarioChat      = "chat"
	ScenarioChurn     = "churn"
	ScenarioRecovery  = "recovery"
)

var scenarios = []string{ScenarioIdle, ScenarioBroadcast, ScenarioChat, ScenarioChurn, ScenarioRecovery}

// Config is one load test run. It travels as JSON from the parent to its
// worker processes, so every field is exported and plain.
type Config struct {
	Scenario string `json:"scenario"`
	URL      string `json:"url"` // default ws://127.0.0.1:8000/connection/websocket (HERALD_LOADTEST_URL)

	Conns      int     `json:"conns"`       // connections (subscribers), default 1000
	Channels   int     `json:"channels"`    // default: broadcast 1, idle 1, chat 100, churn 10, recovery 10
	Rate       float64 `json:"rate"`        // publications/s in total; default broadcast 10, chat 100, recovery 50, else 0
	Publishers int     `json:"publishers"`  // dedicated publisher connections (broadcast, recovery), default 1
	Payload    int     `json:"payload"`     // padding bytes in each publication, default 64
	ServerSide bool    `json:"server_side"` // subscribe via the token's channels claim instead of subscribe commands

	ConnectRate float64       `json:"connect_rate"` // new connections/s, default 500, 0 = unlimited
	Warmup      time.Duration `json:"warmup"`       // default 5s
	Duration    time.Duration `json:"duration"`     // steady-state window, default 30s
	Drain       time.Duration `json:"drain"`        // wait for in-flight deliveries after publishing stops, default 3s
	Timeout     time.Duration `json:"timeout"`      // dial+handshake+connect and subscribe timeout, default 10s

	ChurnRate      float64       `json:"churn_rate"`      // churn: connections replaced per second, default 50
	DropFraction   float64       `json:"drop_fraction"`   // recovery: fraction of subscribers dropped mid-window, default 0.3
	ReconnectDelay time.Duration `json:"reconnect_delay"` // recovery: time a dropped connection stays away, default 1s

	Secret        string `json:"secret,omitempty"` // HS256 secret (HERALD_TOKEN_SECRET) …
	Token         string `json:"token,omitempty"`  // … or one token for every connection
	ChannelPrefix string `json:"channel_prefix"`   // default "lt-<random>:" so each run starts fresh channels

	SourceIPs       string `json:"source_ips"`        // "auto" (127.0.0.2-127.0.0.9 for loopback targets), "none", or list/ranges
	ConnsPerProcess int    `json:"conns_per_process"` // default 19000
	Workers         int    `json:"workers"`           // worker processes; 0 = as many as conns need (1 = in-process)

	ServerPID int `json:"server_pid,omitempty"` // sample RSS/CPU of this pid
	// ServerPprof is the server's net/http/pprof base URL: live heap per
	// connection from forced GCs (LiveHeapStats).
	ServerPprof string `json:"server_pprof,omitempty"`
	// Procs names more server processes to account ("relay=123,kafka=456"):
	// each one's CPU over the steady window, per delivery (ProcStats).
	Procs    string `json:"procs,omitempty"`
	Out      string `json:"out,omitempty"`  // results JSON path
	HTML     string `json:"html,omitempty"` // HTML report path
	Progress bool   `json:"progress"`       // live progress line on stderr, default true

	MaxFrame    int64  `json:"max_frame"`               // largest frame accepted from the server, default 1 MiB
	Reader      string `json:"reader,omitempty"`        // "epoll" (default on Linux) or "goroutine"; "" = default
	Readers     int    `json:"readers,omitempty"`       // epoll reader threads, 0 = max(1, GOMAXPROCS/4)
	FailOnLoss  bool   `json:"fail_on_loss,omitempty"`  // exit 1 when anything is lost, duplicated or reordered
	TestDropNth uint64 `json:"test_drop_nth,omitempty"` // test hook: ignore the N-th delivery of the run
	Seed        uint64 `json:"seed"`                    // random seed (connection picks), default random
}

// flagSet registers the flags of c on a new FlagSet writing help to out.
func (c *Config) flagSet(out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.URL, "url", env("HERALD_LOADTEST_URL", "ws://127.0.0.1:8000/connection/websocket"), "WebSocket endpoint; several, comma-separated (relays of one deployment), spread each channel's subscribers over them round-robin (HERALD_LOADTEST_URL)")
	fs.IntVar(&c.Conns, "conns", 1000, "connections (subscribers)")
	fs.IntVar(&c.Channels, "channels", 0, "channels the connections spread over (default: broadcast/idle 1, chat 100, churn/recovery 10)")
	fs.Float64Var(&c.Rate, "rate", -1, "publications per second in total (default: broadcast 10, chat 100, recovery 50, churn/idle 0)")
	fs.IntVar(&c.Publishers, "publishers", 1, "dedicated publisher connections (broadcast, recovery)")
	fs.IntVar(&c.Payload, "payload", 64, "padding bytes in each publication")
	fs.BoolVar(&c.ServerSide, "server-side", false, "subscribe through the token's channels claim (server-side subscriptions) instead of subscribe commands")
	fs.Float64Var(&c.ConnectRate, "connect-rate", 500, "new connections per second (0 = as fast as possible)")
	fs.DurationVar(&c.Warmup, "warmup", 5*time.Second, "warm-up after connecting, not measured")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "steady-state measurement window")
	fs.DurationVar(&c.Drain, "drain", 3*time.Second, "wait for in-flight deliveries after publishing stops")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "timeout of dial+handshake+connect and of subscribe/write")
	fs.Float64Var(&c.ChurnRate, "churn-rate", 50, "churn: connections closed and replaced per second")
	fs.Float64Var(&c.DropFraction, "drop-fraction", 0.3, "recovery: fraction of subscribers dropped in the middle of the window")
	fs.DurationVar(&c.ReconnectDelay, "reconnect-delay", time.Second, "recovery: how long dropped connections stay away")
	fs.StringVar(&c.Secret, "secret", os.Getenv("HERALD_TOKEN_SECRET"), "HS256 secret to sign connection tokens (HERALD_TOKEN_SECRET)")
	fs.StringVar(&c.Token, "token", "", "use this connection token for every connection instead of signing")
	fs.StringVar(&c.ChannelPrefix, "channel-prefix", "", `channel name prefix (default "lt-<random>:", fresh channels every run)`)
	fs.StringVar(&c.SourceIPs, "source-ips", "auto", `source addresses, round-robin: "auto" (127.0.0.2-127.0.0.9 for loopback targets), "none", or e.g. "127.0.0.2-127.0.0.9,10.0.0.5"`)
	fs.IntVar(&c.ConnsPerProcess, "conns-per-process", 19000, "connections one process holds (open-file limit minus headroom)")
	fs.IntVar(&c.Workers, "workers", 0, "worker processes (0 = as many as --conns needs; 1 = in-process)")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "sample RSS and CPU of this server process from /proc")
	fs.StringVar(&c.ServerPprof, "server-pprof", "", "the server's net/http/pprof base URL (e.g. http://127.0.0.1:6060, the relay's -relay-pprof-addr): live heap per connection, from GCs forced before connecting and at the end of the window")
	fs.StringVar(&c.Procs, "procs", "", `server processes whose CPU is accounted over the window, each alone and per delivery: "name=pid,name=pid" (e.g. "relay=123,controller=456")`)
	fs.StringVar(&c.Out, "out", "", "write JSON results to this file")
	fs.StringVar(&c.HTML, "html", "", "write a self-contained HTML report to this file")
	fs.BoolVar(&c.Progress, "progress", true, "print a live progress line on stderr every second")
	fs.Int64Var(&c.MaxFrame, "max-frame", 1<<20, "largest WebSocket frame accepted from the server (bytes)")
	fs.StringVar(&c.Reader, "reader", defaultReader, `how subscribed connections read: "epoll" (Linux only: --readers threads poll all sockets, about one read(2) per delivery) or "goroutine" (one goroutine blocked in read per connection)`)
	fs.IntVar(&c.Readers, "readers", 0, "epoll reader threads, each polling its share of the connections (0 = one per 4 CPUs of GOMAXPROCS, at least 1)")
	fs.BoolVar(&c.FailOnLoss, "fail-on-loss", false, "exit with an error when deliveries were lost, duplicated or out of order")
	fs.Uint64Var(&c.TestDropNth, "test-drop-delivery", 0, "test hook: pretend the N-th delivery of the run never arrived (the report must show 1 lost)")
	fs.Uint64Var(&c.Seed, "seed", 0, "random seed (0 = random)")
	fs.Usage = func() {
		fmt.Fprintf(out, "%s\nFlags:\n", usageText)
		fs.PrintDefaults()
	}
	return fs
}

const usageText = `Usage: herald loadtest <scenario> [flags]

Scenarios:
  idle        connect --conns, subscribe, hold for --duration
  broadcast   --conns subscribers in one channel, --publishers publish --rate msg/s in total
  chat        --conns connections over --channels channels; random connections publish --rate msg/s in total
  churn       like chat, and --churn-rate connections/s are closed and replaced by new ones
  recovery    publishers keep publishing; --drop-fraction of the subscribers drop mid-window,
              reconnect after --reconnect-delay with recover/offset/epoch; every seq must arrive exactly once

Phases: connect (at --connect-rate) -> warm-up -> steady-state window (--duration, measured) -> drain.
Tokens are signed from --secret (HERALD_TOKEN_SECRET) or --token is used as is.
`

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// ParseArgs parses `<scenario> [flags]` into a validated Config. Help output
// goes to out; -h returns flag.ErrHelp. Every other failure wraps ErrUsage.
func ParseArgs(args []string, out io.Writer) (*Config, error) {
	c := &Config{}
	fs := c.flagSet(out)
	if len(args) == 0 {
		fs.Usage()
		return nil, usageErr("missing scenario (one of %s)", strings.Join(scenarios, ", "))
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fs.Usage()
		return nil, flag.ErrHelp
	}
	c.Scenario = args[0]
	if !validScenario(c.Scenario) {
		return nil, usageErr("unknown scenario %q (one of %s)", c.Scenario, strings.Join(scenarios, ", "))
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, usageErr("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.applyDefaults(set)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func validScenario(s string) bool {
	for _, n := range scenarios {
		if s == n {
			return true
		}
	}
	return false
}

// applyDefaults fills scenario-dependent defaults of flags not given.
func (c *Config) applyDefaults(set map[string]bool) {
	if !set["channels"] {
		switch c.Scenario {
		case ScenarioChat:
			c.Channels = 100
		case ScenarioChurn, ScenarioRecovery:
			c.Channels = 10
		default:
			c.Channels = 1
		}
	}
	if !set["rate"] {
		switch c.Scenario {
		case ScenarioBroadcast:
			c.Rate = 10
		case ScenarioChat:
			c.Rate = 100
		case ScenarioRecovery:
			c.Rate = 50
		default:
			c.Rate = 0
		}
	}
	if c.ChannelPrefix == "" {
		c.ChannelPrefix = fmt.Sprintf("lt-%08x:", rand.Uint32())
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
}

// urls returns the endpoints of --url (comma-separated).
func (c *Config) urls() []string {
	var out []string
	for _, u := range strings.Split(c.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return []string{""} // reported by Validate
	}
	return out
}

// Validate checks the configuration; errors wrap ErrUsage and name the flag.
func (c *Config) Validate() error {
	if !validScenario(c.Scenario) {
		return usageErr("unknown scenario %q (one of %s)", c.Scenario, strings.Join(scenarios, ", "))
	}
	for _, raw := range c.urls() {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return usageErr("--url %q: want ws://host:port/path or wss://… (several: comma-separated)", raw)
		}
	}
	switch {
	case c.Conns <= 0:
		return usageErr("--conns must be positive, got %d", c.Conns)
	case c.Channels <= 0:
		return usageErr("--channels must be positive, got %d", c.Channels)
	case c.Channels > c.Conns:
		return usageErr("--channels (%d) must not exceed --conns (%d): every channel needs a subscriber", c.Channels, c.Conns)
	case c.Scenario == ScenarioBroadcast && c.Channels != 1:
		return usageErr("broadcast uses exactly one channel; --channels %d makes no sense (use chat)", c.Channels)
	case c.Rate < 0:
		return usageErr("--rate must not be negative, got %g", c.Rate)
	case c.Scenario == ScenarioIdle && c.Rate != 0:
		return usageErr("idle does not publish; --rate must be 0 (use broadcast or chat)")
	case (c.Scenario == ScenarioBroadcast || c.Scenario == ScenarioChat || c.Scenario == ScenarioRecovery) && c.Rate == 0:
		return usageErr("%s needs a positive --rate", c.Scenario)
	case c.Publishers <= 0 && (c.Scenario == ScenarioBroadcast || c.Scenario == ScenarioRecovery):
		return usageErr("--publishers must be positive, got %d", c.Publishers)
	case c.Payload < 0 || c.Payload > 1<<20:
		return usageErr("--payload must be within 0..1048576 bytes, got %d", c.Payload)
	case c.ConnectRate < 0:
		return usageErr("--connect-rate must not be negative, got %g", c.ConnectRate)
	case c.Warmup < 0 || c.Drain < 0:
		return usageErr("--warmup and --drain must not be negative")
	case c.Duration <= 0:
		return usageErr("--duration must be positive, got %s", c.Duration)
	case c.Timeout <= 0:
		return usageErr("--timeout must be positive, got %s", c.Timeout)
	case c.Scenario == ScenarioChurn && c.ChurnRate <= 0:
		return usageErr("churn needs a positive --churn-rate, got %g", c.ChurnRate)
	case c.DropFraction < 0 || c.DropFraction > 1:
		return usageErr("--drop-fraction must be within 0..1, got %g", c.DropFraction)
	case c.ReconnectDelay < 0:
		return usageErr("--reconnect-delay must not be negative")
	case c.Scenario == ScenarioRecovery && c.ReconnectDelay >= c.Duration/2:
		return usageErr("--reconnect-delay (%s) must be shorter than half of --duration (%s): drops happen mid-window", c.ReconnectDelay, c.Duration)
	case c.Secret == "" && c.Token == "":
		return usageErr("no credentials: set --secret (or HERALD_TOKEN_SECRET) to sign tokens, or pass --token")
	case c.Secret != "" && c.Token != "":
		return usageErr("--secret and --token are exclusive")
	case c.Token != "" && c.ServerSide:
		return usageErr("--server-side needs --secret: the load tester must put its channels in the tokens")
	case c.ConnsPerProcess <= 0:
		return usageErr("--conns-per-process must be positive, got %d", c.ConnsPerProcess)
	case c.Workers < 0:
		return usageErr("--workers must not be negative, got %d", c.Workers)
	case c.MaxFrame < 1024:
		return usageErr("--max-frame must be at least 1024, got %d", c.MaxFrame)
	case c.ServerPID < 0:
		return usageErr("--server-pid must be a process id, got %d", c.ServerPID)
	case c.Reader != "" && c.Reader != ReaderEpoll && c.Reader != ReaderGoroutine:
		return usageErr("--reader must be %q or %q, got %q", ReaderEpoll, ReaderGoroutine, c.Reader)
	case c.Reader == ReaderEpoll && !epollSupported:
		return usageErr("--reader epoll needs Linux (use --reader goroutine)")
	case c.Readers < 0 || c.Readers > 64:
		return usageErr("--readers must be within 0..64, got %d", c.Readers)
	}
	if _, err := parseProcs(c.Procs); err != nil {
		return usageErr("--procs: %v", err)
	}
	if c.ServerPprof != "" {
		if pu, err := url.Parse(c.ServerPprof); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return usageErr("--server-pprof must be an http:// or https:// URL, got %q", c.ServerPprof)
		}
	}
	if c.ServerPID > 0 {
		if _, err := os.Stat("/proc/" + strconv.Itoa(c.ServerPID) + "/stat"); err != nil {
			return usageErr("--server-pid %d: no such process", c.ServerPID)
		}
	}
	for _, raw := range c.urls() {
		u, _ := url.Parse(raw)
		if _, err := parseSourceIPs(c.SourceIPs, u.Hostname()); err != nil {
			return usageErr("--source-ips: %v", err)
		}
	}
	w := c.workerCount()
	if w > 1 && c.Conns/w > c.ConnsPerProcess {
		return usageErr("--workers %d × --conns-per-process %d cannot hold --conns %d", w, c.ConnsPerProcess, c.Conns)
	}
	if c.Scenario == ScenarioBroadcast || c.Scenario == ScenarioRecovery {
		if c.Publishers > c.Conns {
			return usageErr("--publishers (%d) must not exceed --conns (%d)", c.Publishers, c.Conns)
		}
	}
	return nil
}

// reader is the reader mode, "" meaning this system's default.
func (c *Config) reader() string {
	if c.Reader == "" {
		return defaultReader
	}
	return c.Reader
}

// readers is the number of epoll reader threads. One per four Ps: every
// reader blocks in epoll_wait and is woken for every few deliveries, and
// on two cores shared with the server two readers wake each other's core
// so often that they cost ~40% more CPU per delivery than one, which
// keeps up with 10,000 connections × 10 msg/s there (TestReaderCost).
func (c *Config) readers() int {
	if c.Readers > 0 {
		return c.Readers
	}
	return max(1, runtime.GOMAXPROCS(0)/4)
}

// workerCount is the number of processes the run uses (1 = in-process).
func (c *Config) workerCount() int {
	if c.Workers > 0 {
		return c.Workers
	}
	total := c.Conns + c.dedicatedPublishers()
	return (total + c.ConnsPerProcess - 1) / c.ConnsPerProcess
}

// dedicatedPublishers is the number of extra publisher connections.
func (c *Config) dedicatedPublishers() int {
	if c.Scenario == ScenarioBroadcast || c.Scenario == ScenarioRecovery {
		return c.Publishers
	}
	return 0
}

// parseSourceIPs turns the --source-ips value into addresses. "auto" means
// 127.0.0.2 … 127.0.0.9 when the target is a loopback address (each source
// address has its own ~28,000 ephemeral ports), otherwise none.
func parseSourceIPs(spec, targetHost string) ([]net.IP, error) {
	switch spec {
	case "none", "":
		return nil, nil
	case "auto":
		ip := net.ParseIP(targetHost)
		if targetHost == "localhost" || ip != nil && ip.IsLoopback() && ip.To4() != nil {
			return parseSourceIPs("127.0.0.2-127.0.0.9", "")
		}
		return nil, nil
	}
	var out []net.IP
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(strings.TrimSpace(lo)).To4()
		if a == nil {
			return nil, fmt.Errorf("%q is not an IPv4 address", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(strings.TrimSpace(hi)).To4()
		if b == nil {
			return nil, fmt.Errorf("%q is not an IPv4 address", hi)
		}
		x, y := ipToU32(a), ipToU32(b)
		if y < x {
			return nil, fmt.Errorf("range %s is backwards", part)
		}
		if y-x >= 1024 {
			return nil, fmt.Errorf("range %s is larger than 1024 addresses", part)
		}
		for v := x; v <= y; v++ {
			out = append(out, u32ToIP(v))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no addresses in %q", spec)
	}
	return out, nil
}

func ipToU32(ip net.IP) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func u32ToIP(v uint32) net.IP { return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4() }
