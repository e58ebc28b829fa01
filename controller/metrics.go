package controller

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/metric"
)

// metrics of one controller. No label is unbounded: partition is bounded by
// the topic's partition count.
type metrics struct {
	ownedPartitions   prometheus.Gauge
	recordsConsumed   prometheus.Counter
	fetches           prometheus.Counter
	fetchErrors       prometheus.Counter
	fetchRecords      prometheus.Histogram
	fetchesPaced      prometheus.Counter
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

	presenceChannels      prometheus.Gauge
	presenceMembers       prometheus.Gauge
	presenceRelays        prometheus.Gauge
	presenceRelaysExpired prometheus.Counter
	presenceEvents        *prometheus.CounterVec
	presenceRequests      *prometheus.CounterVec
	controlCommands       *prometheus.CounterVec
	duplicates            prometheus.Counter
	dedupeLoads           prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	f := metric.New(reg, "controller")
	m := &metrics{
		ownedPartitions:       f.Gauge("owned_partitions", "Partitions of the messages topic this controller owns."),
		recordsConsumed:       f.Counter("records_consumed_total", "Kafka records consumed (including bad ones)."),
		fetches:               f.Counter("fetches_total", "Fetch responses processed (one fetch cycle each: the records of every owned partition its leader had)."),
		fetchErrors:           f.Counter("fetch_errors_total", "Failed fetches and partition fetch errors (leadership changes, unavailable partitions, offsets out of range, undecodable batches); retried."),
		fetchesPaced:          f.Counter("fetches_paced_total", "Fetches held back by the fetch window (HERALD_CONTROLLER_FETCH_WINDOW): sent a window after the previous one because records of several relays came back sooner. Stays 0 with one relay."),
		fetchRecords:          f.Histogram("fetch_records", "Records per fetch response (paced by HERALD_CONTROLLER_FETCH_WINDOW while relays produce faster than the loop fetches).", prometheus.ExponentialBuckets(1, 2, 14)),
		ringsEvicted:          f.Counter("rings_evicted_total", "Rings of recent publications dropped because their channel was idle for RingIdle (Recover then reads the store)."),
		badRecords:            f.Counter("bad_records_total", "Records skipped: undecodable value, empty channel or channel of another partition."),
		consumeToStream:       f.Histogram("consume_to_stream_seconds", "Time from the record's Kafka timestamp to its enqueueing on relay streams.", prometheus.ExponentialBuckets(0.0005, 2, 16)),
		deliveries:            f.Counter("deliveries_total", "Publications enqueued to relay streams (one per publication per relay)."),
		relayStreams:          f.Gauge("relay_streams", "Open relay streams."),
		slowRelays:            f.Counter("slow_relay_disconnects_total", "Relay streams closed because their outbound queue was full."),
		interestChannels:      f.Gauge("interest_channels", "Distinct channels at least one relay asked for."),
		batchSize:             f.Histogram("batch_size", "Messages per store batch.", prometheus.ExponentialBuckets(1, 2, 15)),
		batchWriteSeconds:     f.Histogram("batch_write_seconds", "Duration of successful store writes (one per flush: every partition's due batch in one call).", prometheus.ExponentialBuckets(0.0005, 2, 16)),
		storeErrors:           f.Counter("store_errors_total", "Failed store calls (batch writes are retried)."),
		backlog:               f.Gauge("unpersisted_backlog", "Consumed messages not yet persisted, all owned partitions."),
		maxBacklog:            f.Gauge("max_backlog", "Configured bound of unpersisted messages per partition before its fetching pauses (HERALD_CONTROLLER_MAX_BACKLOG)."),
		pausedPartitions:      f.Gauge("paused_partitions", "Owned partitions whose fetching is paused by store backpressure."),
		lag:                   f.GaugeVec("consumer_lag", "Records between the high watermark and the next offset to consume, per owned partition.", "partition"),
		recoverRequests:       f.CounterVec("recover_requests_total", "Recover calls by result (recovered, not_recovered, position, not_owner, error).", "result"),
		positions:             f.CounterVec("positions_total", "Channels answered by Positions calls (relays positioning channels in batches), by result (owned, not_owner).", "result"),
		presenceChannels:      f.Gauge("presence_channels", "Channels with presence members (over all relays; every controller holds all of them)."),
		presenceMembers:       f.Gauge("presence_members", "Presence members (client subscriptions of channels with presence) over all relays."),
		presenceRelays:        f.Gauge("presence_relays", "Relays whose presence this controller holds (streaming, or gone within the presence grace)."),
		presenceRelaysExpired: f.Counter("presence_relays_expired_total", "Relays whose members were dropped because their stream was gone for the presence grace."),
		presenceEvents:        f.CounterVec("presence_events_total", "Join/leave events of owned channels, by result (emitted: sent to the interested relays; dropped: over the per-channel limit of a tick).", "result"),
		presenceRequests:      f.CounterVec("presence_requests_total", "Presence calls, by result (ok, not_owner).", "result"),
	}
	m.controlCommands = f.CounterVec("control_commands_total", "Server API commands run on the relays (Control), by result (complete: every relay replied; partial: ControlTimeout ran out).", "result")
	m.duplicates = f.Counter("duplicate_records_total", "Records skipped because their client_msg_id repeated one of the channel's idempotency window.")
	m.dedupeLoads = f.Counter("dedupe_window_loads_total", "Idempotency windows of channels built from the store (a channel's first keyed record since assignment).")
	if err := f.Err(); err != nil {
		return nil, err
	}
	for _, r := range []string{"recovered", "not_recovered", "position", "not_owner", "error"} {
		m.recoverRequests.WithLabelValues(r)
	}
	for _, r := range []string{"complete", "partial"} {
		m.controlCommands.WithLabelValues(r)
	}
	for _, r := range []string{"owned", "not_owner"} {
		m.positions.WithLabelValues(r)
	}
	return m, nil
}
