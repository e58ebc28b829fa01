package cacher

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/metric"
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
	f := metric.New(reg, "cacher")
	m := &metrics{
		runs:         f.CounterVec("runs_total", "Archive runs by result (succeeded, failed).", "result"),
		chunks:       f.Counter("chunks_archived_total", "Chunks archived and verified (including valid chunks found already in S3)."),
		bytes:        f.Counter("bytes_archived_total", "Bytes written to S3 as chunks."),
		purged:       f.Counter("messages_purged_total", "Messages deleted from the store after archiving."),
		verifyFail:   f.Counter("verification_failures_total", "Chunks that failed verification after writing (nothing purged)."),
		skipped:      f.Counter("chunks_skipped_total", "Full chunks skipped because the store did not hold exactly K dense seqs."),
		lastSuccess:  f.Gauge("last_success_timestamp_seconds", "Unix time of the end of the last successful run."),
		runDuration:  f.Histogram("run_duration_seconds", "Duration of archive runs.", prometheus.ExponentialBuckets(0.01, 4, 10)),
		runningGauge: f.Gauge("running", "1 while an archive run is in progress."),
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	m.runs.WithLabelValues(StatusSucceeded)
	m.runs.WithLabelValues(StatusFailed)
	return m, nil
}
