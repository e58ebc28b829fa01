package management

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/metric"
)

type metrics struct {
	duration    *prometheus.HistogramVec
	chunkReads  *prometheus.CounterVec
	cacheHits   prometheus.Counter
	cacheMiss   prometheus.Counter
	cacheBytes  prometheus.Gauge
	fallbacks   prometheus.Counter
	retries     prometheus.Counter
	notModified prometheus.Counter
	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec
	apiPartial  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	f := metric.New(reg, "management")
	m := &metrics{
		duration: f.HistogramVec("request_duration_seconds", "REST request duration by route pattern and status code.",
			// 0.5 ms (chunk-cache hits) … 8 s (cold S3 reads under load).
			prometheus.ExponentialBuckets(0.0005, 2, 15), "route", "code"),
		chunkReads: f.CounterVec("s3_chunk_reads_total", "Archive chunk reads from S3 by result (ok, not_found, corrupt, error).", "result"),
		cacheHits:  f.Counter("chunk_cache_hits_total", "Chunk reads served from the in-memory cache."),
		cacheMiss:  f.Counter("chunk_cache_misses_total", "Chunk reads that missed the in-memory cache."),
		cacheBytes: f.Gauge("chunk_cache_bytes", "Estimated bytes held by the chunk cache."),
		fallbacks:  f.Counter("store_fallbacks_total", "Archived seq ranges served from the store because their chunk was missing or corrupt."),
		retries:    f.Counter("page_retries_total", "Page reads that found seqs purged concurrently (archived meanwhile) and took them from S3 instead."),
	}
	m.notModified = f.Counter("not_modified_total", "Immutable (archived) pages answered 304 Not Modified from If-None-Match, without reading S3.")
	m.apiRequests = f.CounterVec("api_requests_total", "Server API requests by method (unknown: not a method) and result (ok, or the error code: 101 unauthorized, 104 method not found, 107 bad request, 108 not available, 112 unrecoverable position, 100 internal).", "method", "result")
	m.apiDuration = f.HistogramVec("api_request_duration_seconds", "Server API request duration by method.",
		// 0.5 ms (channels, info on a small cluster) … 8 s (a publish waiting for a slow Kafka).
		prometheus.ExponentialBuckets(0.0005, 2, 15), "method")
	m.apiPartial = f.Counter("api_partial_commands_total", "Server API commands (disconnect, unsubscribe, channels) that not every relay answered within the controller's timeout.")
	if err := f.Err(); err != nil {
		return nil, err
	}
	for _, method := range APIMethods() {
		m.apiRequests.WithLabelValues(method, "ok")
		m.apiDuration.WithLabelValues(method)
	}
	for _, r := range []string{"ok", "not_found", "corrupt", "error"} {
		m.chunkReads.WithLabelValues(r)
	}
	return m, nil
}
