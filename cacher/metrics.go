package cacher

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	runs         *prometheus.CounterVec
	chunks       prometheus.Counter
	bytes        prometheus.Counter
	purged       prometheus.Counter
	verifyFail   prometheus.Counter
	skipped      prometheus.Counter
	lastSuccess  prometheus.Gauge
	runDuration  prometheus.Histogram
	runningGauge prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_cacher_runs_total", Help: "Archive runs by result (succeeded, failed).",
		}, []string{"result"}),
		chunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cacher_chunks_archived_total", Help: "Chunks archived and verified (including valid chunks found already in S3).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cacher_bytes_archived_total", Help: "Bytes written to S3 as chunks.",
		}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cacher_messages_purged_total", Help: "Messages deleted from the store after archiving.",
		}),
		verifyFail: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cacher_verification_failures_total", Help: "Chunks that failed verification after writing (nothing purged).",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cacher_chunks_skipped_total", Help: "Full chunks skipped because the store did not hold exactly K dense seqs.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_cacher_last_success_timestamp_seconds", Help: "Unix time of the end of the last successful run.",
		}),
		runDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_cacher_run_duration_seconds", Help: "Duration of archive runs.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}),
		runningGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_cacher_running", Help: "1 while an archive run is in progress.",
		}),
	}
	for _, c := range []prometheus.Collector{m.runs, m.chunks, m.bytes, m.purged, m.verifyFail, m.skipped, m.lastSuccess, m.runDuration, m.runningGauge} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering cacher metrics: %w", err)
		}
	}
	m.runs.WithLabelValues(StatusSucceeded)
	m.runs.WithLabelValues(StatusFailed)
	return m, nil
}
