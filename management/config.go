package management

import (
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/herald-chat/herald/internal/channelopt"
	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/management/webui"
)

// Config of the management service.
type Config struct {
	// Addr of the REST API. Default 127.0.0.1:8080 (HERALD_MANAGEMENT_ADDR).
	Addr string
	// CacheBytes bounds the LRU of decoded archive chunks. Default 64 MiB
	// (HERALD_MANAGEMENT_CACHE_BYTES). 0 disables caching only when set
	// explicitly through New's caller; RegisterFlags defaults to 64 MiB.
	CacheBytes int
	// Web is the chat page (package webui), off by default.
	Web webui.Config
	// DevTokens, set only by `herald dev` (no flag), serves the page's
	// POST /dev/token; without it that route is a 404.
	DevTokens *webui.DevTokens

	// API serves the server API (POST /api, POST /api/{method}). Default
	// on (HERALD_MANAGEMENT_API); it needs APIKey unless APIOpen.
	API bool
	// APIKey is the server API key, sent as "Authorization: apikey <key>"
	// or "X-API-Key: <key>" (HERALD_API_KEY, no default).
	APIKey string
	// APIOpen, set only by `herald dev` (no flag) when no key is given,
	// serves the API without a key (the dev stack listens on loopback).
	APIOpen bool
	// APIMaxData bounds the data of one publish or broadcast in bytes;
	// larger data is error 107. Default 65536, the relay's default message
	// size (HERALD_MANAGEMENT_API_MAX_DATA).
	APIMaxData int
	// APITimeout bounds one server API call: the Kafka ack plus the
	// owner's seq, or the relays' replies. Default 10s
	// (HERALD_MANAGEMENT_API_TIMEOUT).
	APITimeout time.Duration
	// Controllers are the controllers' gRPC addresses (HERALD_CONTROLLERS,
	// the relays' setting; default 127.0.0.1:8090).
	Controllers []string
	// Brokers, Topic and Partitions locate the messages topic the API
	// publishes to (HERALD_KAFKA_BROKERS, HERALD_KAFKA_TOPIC,
	// HERALD_KAFKA_PARTITIONS, as the relays').
	Brokers    []string
	Topic      string
	Partitions int
	// Presence says which channels have presence (Validate derives it from
	// ChannelNamespaces when nil).
	Presence PresenceOptions
	// ChannelNamespaces is the relays' namespace options
	// (HERALD_CHANNEL_NAMESPACES, internal/channelopt); when set and
	// Presence is nil, Validate derives Presence from it.
	ChannelNamespaces string

	listHook func(*Config)
}

// PresenceOptions tells whether a channel has presence; the server API
// answers error 108 (not available) for channels without it.
type PresenceOptions interface {
	Presence(channel string) bool
}

// RegisterFlags binds the config to flags (flag > HERALD_* env > default):
// -management-addr, -management-cache-bytes.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &c.Addr, "management-addr", "HERALD_MANAGEMENT_ADDR", "127.0.0.1:8080", "management REST API address")
	config.Int(fs, &c.CacheBytes, "management-cache-bytes", "HERALD_MANAGEMENT_CACHE_BYTES", 64<<20, "bytes of decoded archive chunks cached in memory")
	c.Web.RegisterFlags(fs)
	var controllers, brokers string
	config.Bool(fs, &c.API, "management-api", "HERALD_MANAGEMENT_API", true, "serve the server API (POST /api, /api/{method}); needs -api-key")
	config.String(fs, &c.APIKey, "api-key", "HERALD_API_KEY", "", "server API key (Authorization: apikey KEY or X-API-Key); required with -management-api outside herald dev")
	config.Int(fs, &c.APIMaxData, "management-api-max-data", "HERALD_MANAGEMENT_API_MAX_DATA", 64<<10, "max bytes of the data of one server API publish or broadcast (larger: error 107)")
	config.Duration(fs, &c.APITimeout, "management-api-timeout", "HERALD_MANAGEMENT_API_TIMEOUT", 10*time.Second, "bound of one server API call (Kafka ack and seq, or the relays' replies)")
	config.String(fs, &controllers, "controllers", "HERALD_CONTROLLERS", "127.0.0.1:8090", "controller gRPC addresses, comma separated")
	config.String(fs, &brokers, "kafka-brokers", "HERALD_KAFKA_BROKERS", "127.0.0.1:9092", "Kafka seed brokers, comma separated")
	config.String(fs, &c.Topic, "kafka-topic", "HERALD_KAFKA_TOPIC", "herald.messages", "Kafka topic")
	config.Int(fs, &c.Partitions, "kafka-partitions", "HERALD_KAFKA_PARTITIONS", 12, "Kafka topic partition count")
	config.String(fs, &c.ChannelNamespaces, "channel-namespaces", "HERALD_CHANNEL_NAMESPACES", "", "the relays' channel namespace options (JSON, see the relay's flag): the server API answers 108 for presence of a channel without presence")
	c.listHook = func(dst *Config) {
		dst.Controllers = config.List(controllers)
		dst.Brokers = config.List(brokers)
	}
}

// Validate reports configuration errors naming the flag and env variable.
func (c *Config) Validate() error {
	if c.listHook != nil {
		c.listHook(c)
		c.listHook = nil
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("-management-addr (HERALD_MANAGEMENT_ADDR) %q: %v", c.Addr, err)
	}
	if c.CacheBytes < 0 {
		return fmt.Errorf("-management-cache-bytes (HERALD_MANAGEMENT_CACHE_BYTES) %d: must not be negative", c.CacheBytes)
	}
	if c.Presence == nil {
		ns, err := channelopt.Parse(c.ChannelNamespaces)
		if err != nil {
			return fmt.Errorf("-channel-namespaces (HERALD_CHANNEL_NAMESPACES): %v", err)
		}
		c.Presence = namespacePresence{ns}
	}
	if c.API {
		if c.APIKey == "" && !c.APIOpen {
			return fmt.Errorf("the server API needs a key: set HERALD_API_KEY (-api-key), or turn it off with -management-api=false (HERALD_MANAGEMENT_API=false); only 'herald dev' runs it without one")
		}
		if len(c.Controllers) == 0 {
			return fmt.Errorf("-controllers (HERALD_CONTROLLERS): the server API needs at least one controller")
		}
		if len(c.Brokers) == 0 || c.Topic == "" || c.Partitions <= 0 {
			return fmt.Errorf("-kafka-brokers, -kafka-topic, -kafka-partitions (HERALD_KAFKA_*): the server API needs the messages topic")
		}
		if c.APIMaxData <= 0 {
			return fmt.Errorf("-management-api-max-data (HERALD_MANAGEMENT_API_MAX_DATA) %d: must be > 0", c.APIMaxData)
		}
		if c.APITimeout <= 0 {
			return fmt.Errorf("-management-api-timeout (HERALD_MANAGEMENT_API_TIMEOUT) %s: must be > 0", c.APITimeout)
		}
	}
	return c.Web.Validate()
}

// namespacePresence answers PresenceOptions from the channel namespaces.
type namespacePresence struct{ ns *channelopt.Namespaces }

func (p namespacePresence) Presence(channel string) bool { return p.ns.Lookup(channel).Presence }
