// Package metric is the one way a service builds its Prometheus metrics: a
// Factory named after the service creates every collector with the prefix
// herald_<service>_ and registers it on the service's Registerer, collecting
// registration errors into one (Err). With a nil Registerer the collectors
// are created but not registered (unit tests and benchmarks).
package metric

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Factory creates and registers the collectors of one service. It is not
// safe for concurrent use; a service builds its metrics once, in New.
type Factory struct {
	service string
	reg     prometheus.Registerer
	errs    []error
}

// New returns the factory of service ("relay", "controller", …) registering
// on reg (nil: none).
func New(reg prometheus.Registerer, service string) *Factory {
	return &Factory{service: service, reg: reg}
}

func (f *Factory) register(c prometheus.Collector) {
	if f.reg == nil {
		return
	}
	if err := f.reg.Register(c); err != nil {
		f.errs = append(f.errs, err)
	}
}

// Err reports the registrations that failed, as "registering <service>
// metrics: …" (nil when all succeeded).
func (f *Factory) Err() error {
	if err := errors.Join(f.errs...); err != nil {
		return fmt.Errorf("registering %s metrics: %w", f.service, err)
	}
	return nil
}

func (f *Factory) opts(name, help string) prometheus.Opts {
	return prometheus.Opts{Namespace: "herald", Subsystem: f.service, Name: name, Help: help}
}

// Counter returns the registered counter herald_<service>_<name>.
func (f *Factory) Counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts(f.opts(name, help)))
	f.register(c)
	return c
}

// CounterVec returns the registered counter vector herald_<service>_<name>
// with labels (each of bounded cardinality).
func (f *Factory) CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts(f.opts(name, help)), labels)
	f.register(c)
	return c
}

// Gauge returns the registered gauge herald_<service>_<name>.
func (f *Factory) Gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts(f.opts(name, help)))
	f.register(g)
	return g
}

// GaugeVec returns the registered gauge vector herald_<service>_<name>.
func (f *Factory) GaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts(f.opts(name, help)), labels)
	f.register(g)
	return g
}

func (f *Factory) histogramOpts(name, help string, buckets []float64) prometheus.HistogramOpts {
	o := f.opts(name, help)
	return prometheus.HistogramOpts{Namespace: o.Namespace, Subsystem: o.Subsystem, Name: o.Name, Help: o.Help, Buckets: buckets}
}

// Histogram returns the registered histogram herald_<service>_<name>.
func (f *Factory) Histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(f.histogramOpts(name, help, buckets))
	f.register(h)
	return h
}

// HistogramVec returns the registered histogram vector
// herald_<service>_<name>.
func (f *Factory) HistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(f.histogramOpts(name, help, buckets), labels)
	f.register(h)
	return h
}
