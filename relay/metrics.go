package relay

import "github.com/prometheus/client_golang/prometheus"

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
	loopLag           *prometheus.HistogramVec
	rateLimited       *prometheus.CounterVec
	orphaned          prometheus.Counter
	rechecks          prometheus.Counter
	// controllerQueueFull counts controller streams broken because their
	// outbound interest queue was full (ControllerQueue).
	controllerQueueFull prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "herald", "relay"
	m := &metrics{
		connections:   prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections", Help: "Open client connections."}),
		refused:       prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "connections_refused_total", Help: "Connections closed on accept, by reason (limit: at MaxConnections, answered 503; draining: shutting down)."}, []string{"reason"}),
		connects:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "connects_total", Help: "Successful connect commands."}),
		disconnects:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "disconnects_total", Help: "Connections closed, by close code (0 = closed by the client or network)."}, []string{"code"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "subscriptions", Help: "Active client subscriptions."}),
		framesIn:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "frames_in_total", Help: "WebSocket frames received."}),
		framesOut:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "frames_out_total", Help: "WebSocket frames sent."}),
		bytesIn:       prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bytes_in_total", Help: "Bytes received from clients."}),
		bytesOut:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bytes_out_total", Help: "Bytes written to clients."}),
		publishAck: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "publish_ack_seconds", Help: "Time from a publish command to the Kafka ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "broadcast_fanout", Help: "Local subscribers a publication was delivered to, per event loop task.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		fanoutLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "fanout_seconds", Help: "Time from a controller batch's arrival at the relay until an event loop has written one of its publication groups to every local subscriber it has (queueing behind earlier fan-outs included), per group and event loop.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		slowDisconnects:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "slow_consumer_disconnects_total", Help: "Clients disconnected because their outbound bytes exceeded the cap."}),
		controllerStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "controller_streams", Help: "Controller streams by state (up, down)."}, []string{"state"}),
		pushesDropped:     prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pushes_dropped_total", Help: "Publications not broadcast, by reason (duplicate, overflow, unknown)."}, []string{"reason"}),
		publishErrors:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "publish_errors_total", Help: "Publish commands whose Kafka produce failed."}),
		// loop is the event loop index, bounded by the configured loop count.
		loopLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "loop_lag_seconds", Help: "Delay between a timer tick and its run on the event loop (queued work ahead of it), per event loop.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)}, []string{"loop"}),
		rateLimited:         prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "publish_rate_limited_total", Help: "Publishes over the per-connection rate, by outcome (rejected: error 111, disconnect: 3013)."}, []string{"outcome"}),
		orphaned:            prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "channels_orphaned_total", Help: "Channels whose subscribers were told to recover because no controller owned them for the grace period."}),
		rechecks:            prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "channel_rechecks_total", Help: "Channel positions re-checked after a controller stream (re)opened or ownership moved."}),
		controllerQueueFull: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "controller_queue_full_total", Help: "Controller streams reopened because the controller did not read its queue of interest changes (ControllerQueue)."}),
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
	if reg != nil {
		reg.MustRegister(m.connections, m.refused, m.connects, m.disconnects, m.subscriptions, m.framesIn, m.framesOut,
			m.bytesIn, m.bytesOut, m.publishAck, m.fanout, m.fanoutLatency, m.slowDisconnects, m.controllerStreams, m.pushesDropped,
			m.publishErrors, m.loopLag, m.rateLimited, m.orphaned, m.rechecks, m.controllerQueueFull)
	}
	return m
}
