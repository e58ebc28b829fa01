package controller

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of one controller. No label is unbounded: partition is bounded by
// the topic's partition count.
type metrics struct {
	ownedPartitions   prometheus.Gauge
	recordsConsumed   prometheus.Counter
	ringsEvicted      prometheus.Counter
	badRecords        prometheus.Counter
	consumeToStream   prometheus.Histogram
	deliveries        prometheus.Counter
	relayStreams      prometheus.Gauge
	slowRelays        prometheus.Counter
	interestChannels  prometheus.Gauge
	batchSize         prometheus.Histogram
	batchWriteSeconds prometheus.Histogram
	storeErrors       prometheus.Counter
	backlog           prometheus.Gauge
	maxBacklog        prometheus.Gauge
	pausedPartitions  prometheus.Gauge
	lag               *prometheus.GaugeVec
	recoverRequests   *prometheus.CounterVec
	positions         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "herald", "controller"
	m := &metrics{
		ownedPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "owned_partitions", Help: "Partitions of the messages topic this controller owns."}),
		recordsConsumed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "records_consumed_total", Help: "Kafka records consumed (including bad ones)."}),
		ringsEvicted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rings_evicted_total", Help: "Rings of recent publications dropped because their channel was idle for RingIdle (Recover then reads the store)."}),
		badRecords: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "bad_records_total", Help: "Records skipped: undecodable value, empty channel or channel of another partition."}),
		consumeToStream: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "consume_to_stream_seconds", Help: "Time from the record's Kafka timestamp to its enqueueing on relay streams.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "deliveries_total", Help: "Publications enqueued to relay streams (one per publication per relay)."}),
		relayStreams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "relay_streams", Help: "Open relay streams."}),
		slowRelays: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "slow_relay_disconnects_total", Help: "Relay streams closed because their outbound queue was full."}),
		interestChannels: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "interest_channels", Help: "Distinct channels at least one relay asked for."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "batch_size", Help: "Messages per store batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 15)}),
		batchWriteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "batch_write_seconds", Help: "Duration of successful store batch writes.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "store_errors_total", Help: "Failed store calls (batch writes are retried)."}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "unpersisted_backlog", Help: "Consumed messages not yet persisted, all owned partitions."}),
		maxBacklog: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "max_backlog", Help: "Configured bound of unpersisted messages per partition before its fetching pauses (HERALD_CONTROLLER_MAX_BACKLOG)."}),
		pausedPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "paused_partitions", Help: "Owned partitions whose fetching is paused by store backpressure."}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "consumer_lag", Help: "Records between the high watermark and the next offset to consume, per owned partition."},
			[]string{"partition"}),
		recoverRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "recover_requests_total", Help: "Recover calls by result (recovered, not_recovered, position, not_owner, error)."},
			[]string{"result"}),
		positions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "positions_total", Help: "Channels answered by Positions calls (relays positioning channels in batches), by result (owned, not_owner)."},
			[]string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.ownedPartitions, m.recordsConsumed, m.ringsEvicted, m.badRecords, m.consumeToStream,
		m.deliveries, m.relayStreams, m.slowRelays, m.interestChannels, m.batchSize, m.batchWriteSeconds,
		m.storeErrors, m.backlog, m.maxBacklog, m.pausedPartitions, m.lag, m.recoverRequests, m.positions} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("registering controller metrics: %w", err)
	}
	for _, r := range []string{"recovered", "not_recovered", "position", "not_owner", "error"} {
		m.recoverRequests.WithLabelValues(r)
	}
	for _, r := range []string{"owned", "not_owner"} {
		m.positions.WithLabelValues(r)
	}
	return m, nil
}
