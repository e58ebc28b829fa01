package controller

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/herald-chat/herald/internal/config"
)

// Config configures a controller. RegisterFlags fills every field with its
// default (flag > HERALD_* env > documented default).
type Config struct {
	// Addr is the gRPC listen address of the Router service.
	// Default 127.0.0.1:8090 (HERALD_CONTROLLER_ADDR).
	Addr string
	// Brokers are the Kafka seed brokers.
	// Default 127.0.0.1:9092 (HERALD_KAFKA_BROKERS, comma-separated).
	Brokers []string
	// Topic is the messages topic. Default herald.messages (HERALD_KAFKA_TOPIC).
	Topic string
	// Partitions is the partition count used to create Topic when it is
	// missing; an existing topic with another count is an error.
	// Default 12 (HERALD_KAFKA_PARTITIONS).
	Partitions int32
	// Group is the consumer group shared by all controllers.
	// Default herald-controller (HERALD_CONTROLLER_GROUP).
	Group string
	// ID names this controller in Ownership messages and logs.
	// Default hostname-pid (HERALD_CONTROLLER_ID).
	ID string
	// RingSize is how many recent publications per channel are kept in
	// memory for Recover; 0 serves Recover from the store only.
	// Default 128 (HERALD_CONTROLLER_RING_SIZE).
	RingSize int
	// RingIdle drops the ring of a channel without a publication for this
	// long (its head stays; Recover reads such a channel from the store),
	// so memory follows the channels in use, not every channel ever used:
	// a full ring costs ~90 KB (128 publications of ~700 B). 0 keeps rings
	// forever. Default 10m (HERALD_CONTROLLER_RING_IDLE).
	RingIdle time.Duration
	// BatchMessages flushes a partition's batch when it holds this many
	// messages. Default 1000 (HERALD_CONTROLLER_BATCH_MESSAGES).
	BatchMessages int
	// BatchInterval flushes a partition's batch when its oldest message is
	// this old. Default 20ms (HERALD_CONTROLLER_BATCH_INTERVAL).
	BatchInterval time.Duration
	// FetchWindow paces the fetch loops (fetch.go) while records of more
	// than one relay reach them: a fetch is sent at once unless the
	// previous one came back with records less than a window after it was
	// sent; then the next waits until a window after that one (a pause
	// under a third of the window is skipped), so the records several
	// relays produce meanwhile come back in one response instead of one
	// fetch cycle each. A record after a quiet spell is never held, and a
	// controller fed by one relay never waits (its produce window already
	// coalesces). 0 or negative: off. Default 3ms
	// (HERALD_CONTROLLER_FETCH_WINDOW). Measured (docs/performance.md,
	// "Fetch window"): with 4 relays it cuts the controller's CPU per
	// delivery 28 % and the relays' 20 % at +1.8 ms p50; with one relay
	// CPU and latency are as with it off.
	FetchWindow time.Duration
	// MaxBacklog is the number of unpersisted messages of one partition at
	// which its fetching pauses (resumed below half of it).
	// Default 50000 (HERALD_CONTROLLER_MAX_BACKLOG).
	MaxBacklog int
	// StreamQueue is the number of outbound batches queued per relay stream;
	// a relay whose queue is full is disconnected as slow.
	// Default 1024 (HERALD_CONTROLLER_STREAM_QUEUE).
	StreamQueue int
	// SessionTimeout is the consumer group session timeout: a controller
	// that stops heartbeating (crashed, partitioned) loses its partitions to
	// the others after this long. Heartbeats are sent every SessionTimeout/5
	// (at most every 3s). The broker bounds it (Kafka's
	// group.min.session.timeout.ms, 6s by default).
	// Default 45s (HERALD_CONTROLLER_SESSION_TIMEOUT).
	SessionTimeout time.Duration
	// ShutdownTimeout bounds each shutdown step (gRPC graceful stop, batch
	// writer flush, group leave), and a partition's flush on revocation.
	// Default 10s (HERALD_CONTROLLER_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// ControlTimeout bounds how long Control waits for the relays' replies
	// to a server API command; after it the answer is partial (the replies
	// that came, out of how many relays). Default 3s
	// (HERALD_CONTROLLER_CONTROL_TIMEOUT); 0 in a Config literal means 3s.
	ControlTimeout time.Duration
	// PublishedTimeout bounds how long Published waits for the fetch loop to
	// pass the record's offset. Default 5s
	// (HERALD_CONTROLLER_PUBLISHED_TIMEOUT); 0 in a Config literal means 5s.
	PublishedTimeout time.Duration
	// DedupeWindow and DedupeSeqs are the idempotency window: a record
	// whose client_msg_id the channel already had in a record at most
	// DedupeSeqs seqs back whose published_at is at most DedupeWindow
	// before its own is skipped (no seq, not stored). Both bounds come
	// from the log, so a replay skips the same records. Defaults 5m and
	// 1000 (HERALD_CONTROLLER_DEDUPE_WINDOW, HERALD_CONTROLLER_DEDUPE_SEQS);
	// 0 in a Config literal means the default; DedupeSeqs < 0 disables
	// deduplication.
	DedupeWindow time.Duration
	DedupeSeqs   int

	// PresenceGrace is how long the presence members of a relay whose
	// stream is gone are kept (it may reconnect and replace them with a
	// full delta); then they leave (default 15s,
	// HERALD_CONTROLLER_PRESENCE_GRACE). A dead relay's clients are gone
	// from presence within PresenceGrace plus the time it takes to notice
	// the stream is gone (at once when the relay's process dies; gRPC
	// keepalive when its host vanishes) plus 1 s.
	PresenceGrace time.Duration
	// PresenceTick is the period over which join/leave events of a channel
	// are coalesced before the owner sends them (default 100ms,
	// HERALD_CONTROLLER_PRESENCE_TICK).
	PresenceTick time.Duration
	// PresenceEvents caps the join/leave events of one channel per tick
	// (default 10, HERALD_CONTROLLER_PRESENCE_EVENTS): a subscriber gets at
	// most that many pushes per channel per PresenceTick (100 per second
	// with the defaults); the rest are dropped and counted
	// (herald_controller_presence_events_total{result="dropped"}).
	PresenceEvents int

	envErr error // a malformed env value seen by RegisterFlags
}

type int32Value int32

func (v *int32Value) String() string { return strconv.Itoa(int(*v)) }

func (v *int32Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return fmt.Errorf("not a 32-bit integer: %q", s)
	}
	*v = int32Value(n)
	return nil
}

// RegisterFlags registers the controller's flags on fs, with defaults from
// HERALD_* environment variables.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &c.Addr, "controller-addr", "HERALD_CONTROLLER_ADDR", "127.0.0.1:8090", "gRPC listen address of the Router service")

	brokersKey := "HERALD_KAFKA_BROKERS"
	c.Brokers = config.List(config.Env(brokersKey, "127.0.0.1:9092"))
	fs.Func("kafka-brokers", "comma-separated Kafka seed brokers (default "+strings.Join(c.Brokers, ",")+")"+" (env "+brokersKey+")", func(s string) error {
		c.Brokers = config.List(s)
		return nil
	})
	config.String(fs, &c.Topic, "kafka-topic", "HERALD_KAFKA_TOPIC", "herald.messages", "Kafka messages topic")

	partsKey := "HERALD_KAFKA_PARTITIONS"
	c.Partitions = 12
	if v := os.Getenv(partsKey); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			c.envErr = fmt.Errorf("%s=%q is not an integer", partsKey, v)
		} else {
			c.Partitions = int32(n)
		}
	}
	fs.Var((*int32Value)(&c.Partitions), "kafka-partitions", "partition count used to create the topic when missing (env "+partsKey+")")

	config.String(fs, &c.Group, "controller-group", "HERALD_CONTROLLER_GROUP", "herald-controller", "Kafka consumer group of the controllers")
	config.String(fs, &c.ID, "controller-id", "HERALD_CONTROLLER_ID", "", "controller id announced to relays (default hostname-pid)")
	config.Int(fs, &c.RingSize, "controller-ring-size", "HERALD_CONTROLLER_RING_SIZE", 128, "recent publications kept per channel for Recover")
	config.Duration(fs, &c.RingIdle, "controller-ring-idle", "HERALD_CONTROLLER_RING_IDLE", 10*time.Minute, "drop the ring of a channel idle this long (Recover then reads the store; 0: never)")
	config.Int(fs, &c.BatchMessages, "controller-batch-messages", "HERALD_CONTROLLER_BATCH_MESSAGES", 1000, "messages per store batch")
	config.Duration(fs, &c.BatchInterval, "controller-batch-interval", "HERALD_CONTROLLER_BATCH_INTERVAL", 20*time.Millisecond, "max age of a pending store batch")
	config.Duration(fs, &c.FetchWindow, "controller-fetch-window", "HERALD_CONTROLLER_FETCH_WINDOW", 3*time.Millisecond, "while records of several relays come back sooner than this, send a fetch at most every this long, so that one response carries what they all produced; one relay, or a fetch after a quiet spell, never waits (0 or negative: off)")
	config.Int(fs, &c.MaxBacklog, "controller-max-backlog", "HERALD_CONTROLLER_MAX_BACKLOG", 50000, "unpersisted messages per partition before fetching pauses")
	config.Int(fs, &c.StreamQueue, "controller-stream-queue", "HERALD_CONTROLLER_STREAM_QUEUE", 1024, "outbound batches queued per relay stream")
	config.Duration(fs, &c.SessionTimeout, "controller-session-timeout", "HERALD_CONTROLLER_SESSION_TIMEOUT", 45*time.Second, "consumer group session timeout (failover time after a crash)")
	config.Duration(fs, &c.ShutdownTimeout, "controller-shutdown-timeout", "HERALD_CONTROLLER_SHUTDOWN_TIMEOUT", 10*time.Second, "bound of each shutdown step")
	config.Duration(fs, &c.PresenceGrace, "controller-presence-grace", "HERALD_CONTROLLER_PRESENCE_GRACE", 15*time.Second, "keep the presence members of a relay whose stream is gone this long")
	config.Duration(fs, &c.PresenceTick, "controller-presence-tick", "HERALD_CONTROLLER_PRESENCE_TICK", 100*time.Millisecond, "coalesce join/leave events of a channel over this period")
	config.Int(fs, &c.PresenceEvents, "controller-presence-events", "HERALD_CONTROLLER_PRESENCE_EVENTS", 10, "max join/leave events per channel per presence tick (the rest are dropped)")
	config.Duration(fs, &c.ControlTimeout, "controller-control-timeout", "HERALD_CONTROLLER_CONTROL_TIMEOUT", 3*time.Second, "wait for the relays' replies to a server API command (then answer the partial result)")
	config.Duration(fs, &c.PublishedTimeout, "controller-published-timeout", "HERALD_CONTROLLER_PUBLISHED_TIMEOUT", 5*time.Second, "wait for the fetch loop to sequence a record the server API published")
	config.Duration(fs, &c.DedupeWindow, "controller-dedupe-window", "HERALD_CONTROLLER_DEDUPE_WINDOW", 5*time.Minute, "idempotency window: a publish repeating a client_msg_id of the channel within this (by published_at) is skipped")
	config.Int(fs, &c.DedupeSeqs, "controller-dedupe-seqs", "HERALD_CONTROLLER_DEDUPE_SEQS", 1000, "idempotency window in seqs: only the channel's last this many messages are compared (-1: no deduplication)")
	for _, old := range []string{"addr", "group", "id", "ring-size", "ring-idle", "batch-messages", "batch-interval",
		"max-backlog", "stream-queue", "session-timeout", "shutdown-timeout"} {
		config.Deprecated(fs, old, "controller-"+old)
	}
}

func defaultID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "controller"
	}
	return h + "-" + strconv.Itoa(os.Getpid())
}

// Validate reports every invalid setting, naming its flag and env variable.
func (c *Config) Validate() error {
	if c.ID == "" {
		c.ID = defaultID()
	}
	if c.PresenceGrace == 0 {
		c.PresenceGrace = 15 * time.Second
	}
	if c.PresenceTick == 0 {
		c.PresenceTick = 100 * time.Millisecond
	}
	if c.PresenceEvents == 0 {
		c.PresenceEvents = 10
	}
	if c.ControlTimeout == 0 {
		c.ControlTimeout = 3 * time.Second
	}
	if c.PublishedTimeout == 0 {
		c.PublishedTimeout = 5 * time.Second
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = 5 * time.Minute
	}
	if c.DedupeSeqs == 0 {
		c.DedupeSeqs = 1000
	}
	var errs []error
	if c.envErr != nil {
		errs = append(errs, c.envErr)
	}
	bad := func(flagName, env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("-%s (%s): %s", flagName, env, fmt.Sprintf(format, args...)))
	}
	if c.Addr == "" {
		bad("controller-addr", "HERALD_CONTROLLER_ADDR", "must not be empty")
	}
	if len(c.Brokers) == 0 {
		bad("kafka-brokers", "HERALD_KAFKA_BROKERS", "at least one broker is required")
	}
	if c.Topic == "" {
		bad("kafka-topic", "HERALD_KAFKA_TOPIC", "must not be empty")
	}
	if c.Partitions <= 0 {
		bad("kafka-partitions", "HERALD_KAFKA_PARTITIONS", "must be > 0, got %d", c.Partitions)
	}
	if c.Group == "" {
		bad("controller-group", "HERALD_CONTROLLER_GROUP", "must not be empty")
	}
	if c.RingSize < 0 {
		bad("controller-ring-size", "HERALD_CONTROLLER_RING_SIZE", "must be >= 0, got %d", c.RingSize)
	}
	if c.RingIdle < 0 {
		bad("controller-ring-idle", "HERALD_CONTROLLER_RING_IDLE", "must be >= 0 (0: never), got %s", c.RingIdle)
	}
	if c.BatchMessages <= 0 {
		bad("controller-batch-messages", "HERALD_CONTROLLER_BATCH_MESSAGES", "must be > 0, got %d", c.BatchMessages)
	}
	if c.BatchInterval <= 0 {
		bad("controller-batch-interval", "HERALD_CONTROLLER_BATCH_INTERVAL", "must be > 0, got %s", c.BatchInterval)
	}
	if c.MaxBacklog <= 0 {
		bad("controller-max-backlog", "HERALD_CONTROLLER_MAX_BACKLOG", "must be > 0, got %d", c.MaxBacklog)
	}
	if c.StreamQueue <= 0 {
		bad("controller-stream-queue", "HERALD_CONTROLLER_STREAM_QUEUE", "must be > 0, got %d", c.StreamQueue)
	}
	if c.SessionTimeout < 0 {
		bad("controller-session-timeout", "HERALD_CONTROLLER_SESSION_TIMEOUT", "must be >= 0 (0: the Kafka client's default), got %s", c.SessionTimeout)
	}
	if c.PresenceGrace < 0 {
		bad("controller-presence-grace", "HERALD_CONTROLLER_PRESENCE_GRACE", "must be >= 0 (0: 15s), got %s", c.PresenceGrace)
	}
	if c.PresenceTick < 0 {
		bad("controller-presence-tick", "HERALD_CONTROLLER_PRESENCE_TICK", "must be >= 0 (0: 100ms), got %s", c.PresenceTick)
	}
	if c.PresenceEvents < 0 {
		bad("controller-presence-events", "HERALD_CONTROLLER_PRESENCE_EVENTS", "must be >= 0 (0: 10), got %d", c.PresenceEvents)
	}
	if c.ShutdownTimeout <= 0 {
		bad("controller-shutdown-timeout", "HERALD_CONTROLLER_SHUTDOWN_TIMEOUT", "must be > 0, got %s", c.ShutdownTimeout)
	}
	if c.ControlTimeout < 0 {
		bad("controller-control-timeout", "HERALD_CONTROLLER_CONTROL_TIMEOUT", "must be >= 0 (0: 3s), got %s", c.ControlTimeout)
	}
	if c.PublishedTimeout < 0 {
		bad("controller-published-timeout", "HERALD_CONTROLLER_PUBLISHED_TIMEOUT", "must be >= 0 (0: 5s), got %s", c.PublishedTimeout)
	}
	if c.DedupeWindow < 0 {
		bad("controller-dedupe-window", "HERALD_CONTROLLER_DEDUPE_WINDOW", "must be >= 0 (0: 5m), got %s", c.DedupeWindow)
	}
	return errors.Join(errs...)
}
