package relay

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

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
	// EventLoops overrides the number of event loops (default: CPUs when
	// Multicore, else 1).
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

	listHook func(*Config) // set by RegisterFlags, run by Validate (also on New's copy)
}

// RegisterFlags registers the relay flags on fs (flag > HERALD_* env > default).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	var controllers, brokers string
	config.String(fs, &c.Addr, "addr", "HERALD_RELAY_ADDR", "127.0.0.1:8000", "relay WebSocket listen address")
	config.String(fs, &controllers, "controllers", "HERALD_CONTROLLERS", "127.0.0.1:8090", "controller gRPC addresses, comma separated")
	config.String(fs, &brokers, "kafka-brokers", "HERALD_KAFKA_BROKERS", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
	config.String(fs, &c.Topic, "kafka-topic", "HERALD_KAFKA_TOPIC", "herald.messages", "Kafka topic")
	config.Int(fs, &c.Partitions, "kafka-partitions", "HERALD_KAFKA_PARTITIONS", 12, "Kafka topic partition count")
	config.String(fs, &c.ManagementURL, "management-url", "HERALD_MANAGEMENT_URL", "http://127.0.0.1:8080", "management REST base URL (history)")
	config.String(fs, &c.RelayID, "id", "HERALD_RELAY_ID", "", "relay id sent to controllers (default hostname-pid)")
	config.Bool(fs, &c.Multicore, "multicore", "HERALD_RELAY_MULTICORE", true, "one event loop per CPU")
	config.Int(fs, &c.MaxMessageSize, "max-message-size", "HERALD_RELAY_MAX_MESSAGE_SIZE", 64<<10, "max client message size in bytes")
	config.Duration(fs, &c.PingInterval, "ping-interval", "HERALD_RELAY_PING_INTERVAL", 25*time.Second, "server ping interval")
	config.Duration(fs, &c.PongTimeout, "pong-timeout", "HERALD_RELAY_PONG_TIMEOUT", 10*time.Second, "client pong timeout")
	config.Duration(fs, &c.HandshakeTimeout, "handshake-timeout", "HERALD_RELAY_HANDSHAKE_TIMEOUT", 5*time.Second, "upgrade + connect timeout")
	config.Int(fs, &c.MaxSubscriptions, "max-subscriptions", "HERALD_RELAY_MAX_SUBSCRIPTIONS", 128, "max subscriptions per connection")
	config.Int(fs, &c.OutboundCap, "outbound-cap", "HERALD_RELAY_OUTBOUND_CAP", 4<<20, "per-connection unsent bytes before disconnect 3008")
	// Lists are split after parsing (in Validate).
	c.Controllers, c.Brokers = nil, nil
	c.listHook = func(dst *Config) {
		dst.Controllers = config.List(controllers)
		dst.Brokers = config.List(brokers)
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
		errs = append(errs, fmt.Errorf("relay address -addr / HERALD_RELAY_ADDR %q: %w", c.Addr, err))
	}
	if len(c.Controllers) == 0 {
		errs = append(errs, errors.New("no controllers: set -controllers / HERALD_CONTROLLERS"))
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
	}{{"-ping-interval", c.PingInterval}, {"-pong-timeout", c.PongTimeout}, {"-handshake-timeout", c.HandshakeTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", d.name))
		}
	}
	if c.MaxMessageSize < 0 || c.OutboundCap < 0 || c.MaxSubscriptions < 0 {
		errs = append(errs, errors.New("relay size limits must not be negative"))
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
	return c
}
