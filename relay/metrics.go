package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/metric"
)

// metrics are the relay's Prometheus metrics (prefix herald_relay_).
type metrics struct {
	connections       prometheus.Gauge
	refused           *prometheus.CounterVec
	connects          prometheus.Counter
	disconnects       *prometheus.CounterVec
	subscriptions     prometheus.Gauge
	framesIn          prometheus.Counter
	framesOut         prometheus.Counter
	bytesIn           prometheus.Counter
	bytesOut          prometheus.Counter
	publishAck        prometheus.Histogram
	fanout            prometheus.Histogram
	fanoutLatency     prometheus.Histogram
	slowDisconnects   prometheus.Counter
	controllerStreams *prometheus.GaugeVec
	pushesDropped     *prometheus.CounterVec
	publishErrors     prometheus.Counter
	produceBatch      prometheus.Histogram
	loopLag           *prometheus.HistogramVec
	rateLimited       *prometheus.CounterVec
	orphaned          prometheus.Counter
	rechecks          prometheus.Counter
	// controllerQueueFull counts controller streams broken because their
	// outbound interest queue was full (ControllerQueue).
	controllerQueueFull prometheus.Counter
	// Presence (presence.go).
	presenceChannels prometheus.Gauge
	presenceMembers  prometheus.Gauge
	presencePushes   prometheus.Counter
	presenceRequests *prometheus.CounterVec
}

// newMetrics registers the metrics on reg (nil: none); a name already
// registered there panics, as with MustRegister.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := metric.New(reg, "relay")
	m := &metrics{
		connections:       f.Gauge("connections", "Open client connections."),
		refused:           f.CounterVec("connections_refused_total", "Connections closed on accept, by reason (limit: at MaxConnections, answered 503; draining: shutting down).", "reason"),
		connects:          f.Counter("connects_total", "Successful connect commands."),
		disconnects:       f.CounterVec("disconnects_total", "Connections closed, by close code (0 = closed by the client or network).", "code"),
		subscriptions:     f.Gauge("subscriptions", "Active client subscriptions."),
		framesIn:          f.Counter("frames_in_total", "WebSocket frames received."),
		framesOut:         f.Counter("frames_out_total", "WebSocket frames sent."),
		bytesIn:           f.Counter("bytes_in_total", "Bytes received from clients."),
		bytesOut:          f.Counter("bytes_out_total", "Bytes written to clients."),
		publishAck:        f.Histogram("publish_ack_seconds", "Time from a publish command to the Kafka ack.", prometheus.ExponentialBuckets(0.0005, 2, 14)),
		fanout:            f.Histogram("broadcast_fanout", "Local subscribers a publication was delivered to, per event loop task.", prometheus.ExponentialBuckets(1, 4, 10)),
		fanoutLatency:     f.Histogram("fanout_seconds", "Time from a controller batch's arrival at the relay until an event loop has written one of its publication groups to every local subscriber it has (queueing behind earlier fan-outs included), per group and event loop.", prometheus.ExponentialBuckets(0.0001, 2, 16)),
		slowDisconnects:   f.Counter("slow_consumer_disconnects_total", "Clients disconnected because their outbound bytes exceeded the cap."),
		controllerStreams: f.GaugeVec("controller_streams", "Controller streams by state (up, down).", "state"),
		pushesDropped:     f.CounterVec("pushes_dropped_total", "Publications not broadcast, by reason (duplicate, overflow, unknown).", "reason"),
		publishErrors:     f.Counter("publish_errors_total", "Publish commands whose Kafka produce failed."),
		produceBatch:      f.Histogram("produce_window_batch", "Publishes held by the produce window and handed to the Kafka producer together, per window (a publish produced at once, the relay being quiet, is not counted).", prometheus.ExponentialBuckets(1, 2, 12)),
		// loop is the event loop index, bounded by the configured loop count.
		loopLag:             f.HistogramVec("loop_lag_seconds", "Delay between a timer tick and its run on the event loop (queued work ahead of it), per event loop.", prometheus.ExponentialBuckets(0.0001, 4, 9), "loop"),
		rateLimited:         f.CounterVec("publish_rate_limited_total", "Publishes over the per-connection rate, by outcome (rejected: error 111, disconnect: 3013).", "outcome"),
		orphaned:            f.Counter("channels_orphaned_total", "Channels whose subscribers were told to recover because no controller owned them for the grace period."),
		rechecks:            f.Counter("channel_rechecks_total", "Channel positions re-checked after a controller stream (re)opened or ownership moved."),
		controllerQueueFull: f.Counter("controller_queue_full_total", "Controller streams reopened because the controller did not read its queue of interest changes (ControllerQueue)."),
		presenceChannels:    f.Gauge("presence_channels", "Channels with presence that have members on this relay."),
		presenceMembers:     f.Gauge("presence_members", "Presence members (subscriptions of channels with presence) on this relay."),
		presencePushes:      f.Counter("presence_pushes_total", "Join and leave pushes queued to clients."),
		presenceRequests:    f.CounterVec("presence_requests_total", "presence and presence_stats commands, by method and result (ok, error, busy).", "method", "result"),
	}
	for _, o := range []string{"rejected", "disconnect"} {
		m.rateLimited.WithLabelValues(o)
	}
	// Pre-create the bounded label values so dashboards show zeros, not gaps.
	for _, r := range []string{"duplicate", "overflow", "unknown"} {
		m.pushesDropped.WithLabelValues(r)
	}
	for _, st := range []string{"up", "down"} {
		m.controllerStreams.WithLabelValues(st)
	}
	for _, r := range []string{"limit", "draining"} {
		m.refused.WithLabelValues(r)
	}
	if err := f.Err(); err != nil {
		panic(err)
	}
	return m
}
