package relay

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/url"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/herald-chat/herald/internal/channelopt"
	"github.com/herald-chat/herald/internal/config"
)

// Config configures a relay. Zero values of the tuning fields mean the
// documented default (see withDefaults); RegisterFlags sets all defaults.
type Config struct {
	// Addr is the WebSocket listen address (default 127.0.0.1:8000, env
	// HERALD_RELAY_ADDR). The endpoint is /connection/websocket.
	Addr string
	// Controllers are the controller gRPC addresses (default 127.0.0.1:8090,
	// env HERALD_CONTROLLERS, comma list).
	Controllers []string
	// Brokers are the Kafka seed brokers (default 127.0.0.1:9092, env
	// HERALD_KAFKA_BROKERS, comma list).
	Brokers []string
	// Topic is the Kafka topic (default herald.messages, env HERALD_KAFKA_TOPIC).
	Topic string
	// Partitions is the topic's partition count (default 12, env
	// HERALD_KAFKA_PARTITIONS); it must match the topic.
	Partitions int
	// ManagementURL is the management REST base URL used for history (default
	// http://127.0.0.1:8080, env HERALD_MANAGEMENT_URL).
	ManagementURL string
	// RelayID names this relay towards controllers (default: hostname-pid-random).
	RelayID string

	// Multicore runs one event loop per CPU (default true).
	Multicore bool
	// EventLoops overrides the number of event loops (default: the CPUs the
	// process may use, GOMAXPROCS at start, when Multicore; else 1).
	EventLoops int
	// MaxMessageSize caps one client message, also across continuation
	// frames (default 64 KiB; larger → close 1009).
	MaxMessageSize int
	// MaxHeaderSize caps the HTTP upgrade request header block (default 8 KiB).
	MaxHeaderSize int
	// PingInterval is the server ping period (default 25s).
	PingInterval time.Duration
	// PongTimeout is how long a client may take to answer a ping (default 10s).
	PongTimeout time.Duration
	// HandshakeTimeout bounds the upgrade plus connect command (default 5s).
	HandshakeTimeout time.Duration
	// MaxSubscriptions caps subscriptions per connection (default 128).
	MaxSubscriptions int
	// MaxConnections caps the open connections of the relay (default 0:
	// the process's open-file limit minus a reserve, see ConnLimit). Beyond
	// it a new connection gets HTTP 503 with Retry-After and is closed,
	// and the connections already open are unaffected. Accepting with the
	// file table full would stop the event loops (gnet treats EMFILE from
	// accept as fatal), so the limit must stay below the open-file limit.
	MaxConnections int
	// OutboundCap is the per-connection unsent byte cap (default 4 MiB);
	// above it the client is disconnected with 3008 slow.
	OutboundCap int
	// Workers is the size of the worker pool for history and recovery calls
	// (default 16); WorkerQueue bounds its queue (default 1024; full → error 111).
	Workers     int
	WorkerQueue int
	// RouterWorkers run channel syncs and gap fills (default 4).
	RouterWorkers int
	// PendingLimit bounds the pushes buffered per channel while it syncs or
	// fills a gap, and per subscription while it is being positioned
	// (default 1024).
	PendingLimit int
	// InterestGrace delays the interest removal after the last local
	// subscriber of a channel left (default 5s).
	InterestGrace time.Duration
	// RPCTimeout bounds one controller or management call (default 5s).
	RPCTimeout time.Duration

	// PublishRate is the sustained publish rate per connection in messages
	// per second (default 100; -1 disables the limit) and PublishBurst the
	// bucket size (default 2×PublishRate). A publish over the limit gets
	// error 111 (too many requests); more than PublishAbuseLimit rejected
	// publishes within 10 s (default 100) disconnect with 3013.
	PublishRate       int
	PublishBurst      int
	PublishAbuseLimit int
	// PublishTimeout bounds the wait for Kafka's ack of one publish
	// (default 10s); on timeout or produce failure the client gets error
	// 100 (temporary), never an ack.
	PublishTimeout time.Duration
	// ProduceWindow paces Kafka produce requests (produce.go): a publish
	// finding the relay quiet for a window is produced at once, later ones
	// are held until the window since the last send ends and produced
	// together (default 3ms; negative: every publish at once).
	ProduceWindow time.Duration
	// IdleTimeout closes an upgraded connection that sent no complete frame
	// for that long (default 2×PingInterval+PongTimeout): a connected
	// client with 3012, one that never connected with 3502.
	IdleTimeout time.Duration
	// AllowedOrigins lists the Origin header values allowed to upgrade
	// (default empty: all). Entries match exactly (case-insensitive) or as
	// path.Match patterns such as https://*.example.com; "*" allows all. A
	// request without Origin (non-browser clients) is allowed. A refused
	// Origin gets HTTP 403 before the upgrade.
	AllowedOrigins []string
	// ExpiredCloseDelay is how long a connection (or a subscription made
	// with a subscription token) may outlive its token's exp before it is
	// closed with 3005 connection expired (3006 subscription expired);
	// refresh (sub_refresh) with a new token extends it (default 25s, the
	// SDKs refresh when the token expires).
	ExpiredCloseDelay time.Duration
	// DrainWindow spreads the 3001 shutdown disconnects of a graceful stop
	// over this window so clients reconnect elsewhere gradually (default
	// 10s; -1 disconnects everyone at once).
	DrainWindow time.Duration
	// Compression enables permessage-deflate (default false). It is
	// negotiated without context takeover in both directions, so it costs
	// no memory per connection; a compressed client message is capped at
	// MaxMessageSize after decompression (larger → 1009).
	Compression bool
	// ControllerGrace is how long the channels of a controller whose stream
	// broke may wait for it (or a new owner of its partitions) before
	// their subscribers are told to recover: client-side subscriptions get
	// an unsubscribe push 2500 (the SDKs resubscribe with recovery),
	// server-side ones a disconnect 3010 (default 5s).
	ControllerGrace time.Duration
	// ControllerQueue bounds, per controller stream, the interest changes
	// (channels added or removed) queued for the stream's sender goroutine
	// and not yet handed to gRPC (default 262144, a few MiB at most). A
	// controller that stops reading (overloaded, paused, a half-open
	// connection) only fills its own queue; when it is full the queued
	// changes are dropped and the stream is broken and reopened, and the
	// new stream starts with the relay's whole interest set (as every
	// stream does), so nothing is lost silently and no other controller
	// waits for it. Keep it above the largest burst of changes a healthy
	// controller must absorb: one janitor sweep removes every channel idle
	// past InterestGrace at once.
	ControllerQueue int

	// ChannelNamespaces is the channel namespace options (presence,
	// join_leave, force_push_join_leave) as JSON, see internal/channelopt
	// (default empty: no channel has presence; env
	// HERALD_CHANNEL_NAMESPACES).
	ChannelNamespaces string

	// PprofAddr serves net/http/pprof on this address when set (default
	// off, env HERALD_RELAY_PPROF_ADDR). Never expose it publicly.
	PprofAddr string

	listHook func(*Config) // set by RegisterFlags, run by Validate (also on New's copy)
}

// RegisterFlags registers the relay flags on fs (flag > HERALD_* env > default).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	var controllers, brokers, origins string
	config.String(fs, &c.Addr, "relay-addr", "HERALD_RELAY_ADDR", "127.0.0.1:8000", "relay WebSocket listen address")
	config.String(fs, &controllers, "controllers", "HERALD_CONTROLLERS", "127.0.0.1:8090", "controller gRPC addresses, comma separated")
	config.String(fs, &brokers, "kafka-brokers", "HERALD_KAFKA_BROKERS", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
	config.String(fs, &c.Topic, "kafka-topic", "HERALD_KAFKA_TOPIC", "herald.messages", "Kafka topic")
	config.Int(fs, &c.Partitions, "kafka-partitions", "HERALD_KAFKA_PARTITIONS", 12, "Kafka topic partition count")
	config.String(fs, &c.ManagementURL, "management-url", "HERALD_MANAGEMENT_URL", "http://127.0.0.1:8080", "management REST base URL (history)")
	config.String(fs, &c.RelayID, "relay-id", "HERALD_RELAY_ID", "", "relay id sent to controllers (default hostname-pid)")
	config.Bool(fs, &c.Multicore, "relay-multicore", "HERALD_RELAY_MULTICORE", true, "one event loop per CPU")
	config.Int(fs, &c.EventLoops, "relay-event-loops", "HERALD_RELAY_EVENT_LOOPS", 0, "number of event loops (0: one per usable CPU with multicore, else 1)")
	config.Int(fs, &c.MaxMessageSize, "relay-max-message-size", "HERALD_RELAY_MAX_MESSAGE_SIZE", 64<<10, "max client message size in bytes")
	config.Duration(fs, &c.PingInterval, "relay-ping-interval", "HERALD_RELAY_PING_INTERVAL", 25*time.Second, "server ping interval")
	config.Duration(fs, &c.PongTimeout, "relay-pong-timeout", "HERALD_RELAY_PONG_TIMEOUT", 10*time.Second, "client pong timeout")
	config.Duration(fs, &c.HandshakeTimeout, "relay-handshake-timeout", "HERALD_RELAY_HANDSHAKE_TIMEOUT", 5*time.Second, "upgrade + connect timeout")
	config.Int(fs, &c.MaxSubscriptions, "relay-max-subscriptions", "HERALD_RELAY_MAX_SUBSCRIPTIONS", 128, "max subscriptions per connection")
	config.Int(fs, &c.MaxConnections, "relay-max-connections", "HERALD_RELAY_MAX_CONNECTIONS", 0, "max open connections, beyond it HTTP 503 with Retry-After (0: the open-file limit minus a 5% reserve of 256-4096 files; never above that)")
	config.Int(fs, &c.OutboundCap, "relay-outbound-cap", "HERALD_RELAY_OUTBOUND_CAP", 4<<20, "per-connection unsent bytes before disconnect 3008")
	config.Int(fs, &c.PublishRate, "relay-publish-rate", "HERALD_RELAY_PUBLISH_RATE", 100, "publishes per second per connection (-1: unlimited); over it error 111")
	config.Int(fs, &c.PublishBurst, "relay-publish-burst", "HERALD_RELAY_PUBLISH_BURST", 0, "publish burst per connection (default 2x publish-rate)")
	config.Int(fs, &c.PublishAbuseLimit, "relay-publish-abuse-limit", "HERALD_RELAY_PUBLISH_ABUSE_LIMIT", 100, "rejected publishes within 10s before disconnect 3013")
	config.Duration(fs, &c.ProduceWindow, "relay-produce-window", "HERALD_RELAY_PRODUCE_WINDOW", 3*time.Millisecond, "publishes within this long of the last Kafka produce are held and produced together when it ends; a publish after a quiet window goes at once (0: the default, negative: every publish at once)")
	config.Duration(fs, &c.PublishTimeout, "relay-publish-timeout", "HERALD_RELAY_PUBLISH_TIMEOUT", 10*time.Second, "wait for the Kafka ack of a publish before answering error 100")
	config.Duration(fs, &c.IdleTimeout, "relay-idle-timeout", "HERALD_RELAY_IDLE_TIMEOUT", 0, "close connections without a complete frame for this long (default 2x ping-interval + pong-timeout)")
	config.String(fs, &origins, "relay-allowed-origins", "HERALD_RELAY_ALLOWED_ORIGINS", "", "allowed Origin values or patterns, comma separated (empty: all)")
	config.Duration(fs, &c.ExpiredCloseDelay, "relay-expired-close-delay", "HERALD_RELAY_EXPIRED_CLOSE_DELAY", 25*time.Second, "grace after a token's exp before disconnect 3005/3006 unless refreshed")
	config.Duration(fs, &c.DrainWindow, "relay-drain-window", "HERALD_RELAY_DRAIN_WINDOW", 10*time.Second, "spread shutdown disconnects (3001) over this window")
	config.Bool(fs, &c.Compression, "relay-compression", "HERALD_RELAY_COMPRESSION", false, "enable permessage-deflate")
	config.Duration(fs, &c.ControllerGrace, "relay-controller-grace", "HERALD_RELAY_CONTROLLER_GRACE", 5*time.Second, "wait for a lost controller before telling its channels' subscribers to recover")
	config.Int(fs, &c.ControllerQueue, "relay-controller-queue", "HERALD_RELAY_CONTROLLER_QUEUE", 1<<18, "interest changes (channels) queued per controller stream; when full the stream is reopened with the whole interest set")
	config.String(fs, &c.ChannelNamespaces, "channel-namespaces", "HERALD_CHANNEL_NAMESPACES", "", `channel namespace options as JSON, e.g. {"":{"presence":true},"chat":{"presence":true,"join_leave":true}}: namespace (before the first ':'; "" for channels without one) → presence, join_leave, force_push_join_leave`)
	config.String(fs, &c.PprofAddr, "relay-pprof-addr", "HERALD_RELAY_PPROF_ADDR", "", "serve net/http/pprof on this address (empty: off; never public)")
	for _, old := range []string{"addr", "id", "multicore", "event-loops", "max-message-size", "ping-interval", "pong-timeout",
		"handshake-timeout", "max-subscriptions", "max-connections", "outbound-cap", "publish-rate", "publish-burst",
		"publish-abuse-limit", "publish-timeout", "idle-timeout", "allowed-origins", "expired-close-delay", "drain-window",
		"compression", "controller-grace", "pprof-addr"} {
		config.Deprecated(fs, old, "relay-"+old)
	}
	// Lists are split after parsing (in Validate).
	c.Controllers, c.Brokers, c.AllowedOrigins = nil, nil, nil
	c.listHook = func(dst *Config) {
		dst.Controllers = config.List(controllers)
		dst.Brokers = config.List(brokers)
		dst.AllowedOrigins = config.List(origins)
	}
}

// Validate checks the configuration; it also finishes list flags parsed by
// RegisterFlags.
func (c *Config) Validate() error {
	if c.listHook != nil {
		c.listHook(c)
		c.listHook = nil
	}
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("relay address -relay-addr / HERALD_RELAY_ADDR %q: %w", c.Addr, err))
	}
	if c.PprofAddr != "" {
		if _, _, err := net.SplitHostPort(c.PprofAddr); err != nil {
			errs = append(errs, fmt.Errorf("pprof address -relay-pprof-addr / HERALD_RELAY_PPROF_ADDR %q: %w", c.PprofAddr, err))
		}
	}
	if len(c.Controllers) == 0 {
		errs = append(errs, errors.New("no controllers: set -controllers / HERALD_CONTROLLERS"))
	}
	if c.EventLoops < 0 || c.EventLoops > 1024 {
		errs = append(errs, fmt.Errorf("-relay-event-loops / HERALD_RELAY_EVENT_LOOPS must be 0 (one per CPU) to 1024, got %d", c.EventLoops))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("empty Kafka topic: set -kafka-topic / HERALD_KAFKA_TOPIC"))
	}
	if c.Partitions <= 0 {
		errs = append(errs, fmt.Errorf("-kafka-partitions / HERALD_KAFKA_PARTITIONS must be > 0, got %d", c.Partitions))
	}
	if u, err := url.Parse(c.ManagementURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, fmt.Errorf("-management-url / HERALD_MANAGEMENT_URL %q is not an http(s) URL", c.ManagementURL))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"-relay-ping-interval", c.PingInterval}, {"-relay-pong-timeout", c.PongTimeout}, {"-relay-handshake-timeout", c.HandshakeTimeout},
		{"-relay-publish-timeout", c.PublishTimeout}, {"-relay-idle-timeout", c.IdleTimeout}, {"-relay-expired-close-delay", c.ExpiredCloseDelay},
		{"-relay-controller-grace", c.ControllerGrace}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", d.name))
		}
	}
	if c.ControllerQueue < 0 {
		errs = append(errs, fmt.Errorf("-controller-queue / HERALD_RELAY_CONTROLLER_QUEUE must not be negative, got %d", c.ControllerQueue))
	}
	if c.MaxMessageSize < 0 || c.OutboundCap < 0 || c.MaxSubscriptions < 0 || c.MaxConnections < 0 {
		errs = append(errs, errors.New("relay size limits must not be negative"))
	}
	if c.PublishRate < -1 || c.PublishBurst < 0 || c.PublishAbuseLimit < 0 {
		errs = append(errs, errors.New("-relay-publish-rate / HERALD_RELAY_PUBLISH_RATE must be >= -1 and -relay-publish-burst, -relay-publish-abuse-limit >= 0"))
	}
	if _, err := channelopt.Parse(c.ChannelNamespaces); err != nil {
		errs = append(errs, err)
	}
	for _, o := range c.AllowedOrigins {
		if _, err := path.Match(strings.ToLower(o), ""); err != nil {
			errs = append(errs, fmt.Errorf("-relay-allowed-origins / HERALD_RELAY_ALLOWED_ORIGINS: bad pattern %q: %w", o, err))
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns c with zero tuning fields set to their defaults.
func (c Config) withDefaults() Config {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8000"
	}
	if c.Topic == "" {
		c.Topic = "herald.messages"
	}
	def(&c.Partitions, 12)
	if c.ManagementURL == "" {
		c.ManagementURL = "http://127.0.0.1:8080"
	}
	c.ManagementURL = strings.TrimRight(c.ManagementURL, "/")
	def(&c.MaxMessageSize, 64<<10)
	def(&c.MaxHeaderSize, 8<<10)
	defd(&c.PingInterval, 25*time.Second)
	defd(&c.PongTimeout, 10*time.Second)
	defd(&c.HandshakeTimeout, 5*time.Second)
	def(&c.MaxSubscriptions, 128)
	def(&c.OutboundCap, 4<<20)
	def(&c.Workers, 16)
	def(&c.WorkerQueue, 1024)
	def(&c.RouterWorkers, 4)
	def(&c.PendingLimit, 1024)
	defd(&c.InterestGrace, 5*time.Second)
	defd(&c.RPCTimeout, 5*time.Second)
	def(&c.PublishRate, 100)
	def(&c.PublishBurst, 2*max(c.PublishRate, 1))
	def(&c.PublishAbuseLimit, 100)
	defd(&c.PublishTimeout, 10*time.Second)
	defd(&c.ProduceWindow, 3*time.Millisecond)
	defd(&c.IdleTimeout, 2*c.PingInterval+c.PongTimeout)
	defd(&c.ExpiredCloseDelay, 25*time.Second)
	defd(&c.DrainWindow, 10*time.Second)
	defd(&c.ControllerGrace, 5*time.Second)
	def(&c.ControllerQueue, 1<<18)
	return c
}

// ConnLimit is the connection limit the relay runs with: MaxConnections,
// or when 0 the open-file limit nofile minus a reserve for everything else
// the process opens (Kafka and controller connections, history calls to
// management, the admin server and its scrapers, logs): 5% of nofile,
// at least 256 and at most 4,096. A configured limit above that is lowered
// to it: past it accept(2) fails with EMFILE, which stops gnet's event
// loops and with them the relay.
func (c Config) ConnLimit(nofile uint64) int {
	reserve := min(max(nofile/20, 256), 4096)
	limit := 1
	if nofile > reserve {
		limit = int(min(nofile-reserve, math.MaxInt32))
	}
	if c.MaxConnections > 0 {
		return min(c.MaxConnections, limit)
	}
	return limit
}

// startProcs is the runtime's own GOMAXPROCS, read before a command raises
// it (package initialisation runs before main): the CPUs this process may
// use, container CPU limits included.
var startProcs = runtime.GOMAXPROCS(0)

// Loops is the number of event loops the relay runs with this config.
func (c Config) Loops() int {
	switch {
	case c.EventLoops > 0:
		return c.EventLoops
	case c.Multicore:
		return startProcs
	default:
		return 1
	}
}

// Procs is the GOMAXPROCS a relay process should run with: one P more than
// it has event loops. A gnet loop waits in epoll_wait inside a system call
// that keeps its P; with every P held that way, nothing polls Go's own
// sockets (the Kafka producer, the controller streams) but the runtime's
// monitor, every 10 ms at worst, and each publish ack and each batch from a
// controller waited for it: at 1,000 chat messages/s the produce → ack time
// was 7 ms on average with GOMAXPROCS = loops and 0.7 ms with one P more
// (docs/performance.md).
func (c Config) Procs() int {
	return c.Loops() + 1
}
