// Package admin serves every service's operational endpoints on its admin
// address: /metrics (Prometheus, with Go runtime and process collectors),
// /healthz (the process is alive) and /readyz (every readiness check passes).
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-chat/herald/internal/httpjson"
)

// Check reports nil when a dependency is ready.
type Check func(ctx context.Context) error

// Server is one service's admin endpoint. Register metrics on Registry.
type Server struct {
	Registry *prometheus.Registry
	log      *slog.Logger

	mu     sync.Mutex
	checks map[string]Check
	srv    *http.Server
	ln     net.Listener
}

// New returns an admin server with a fresh registry holding the Go runtime
// and process collectors.
func New(log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Server{Registry: reg, log: log, checks: map[string]Check{}}
}

// AddCheck adds a named readiness check to /readyz.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	s.checks[name] = c
	s.mu.Unlock()
}

// Handler returns the admin mux (useful in tests and for embedding). Its
// errors are JSON in the shape of every Herald API (internal/httpjson):
// unknown paths 404, other methods 405, query parameters 400 (no endpoint
// takes any), a failing readiness check 503 {"error":"<check>: <cause>"}.
func (s *Server) Handler() http.Handler {
	metrics := promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := httpjson.Query(w, r); ok {
			metrics.ServeHTTP(w, r)
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := httpjson.Query(w, r); ok {
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := httpjson.Query(w, r); !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		s.mu.Lock()
		checks := make(map[string]Check, len(s.checks))
		for k, v := range s.checks {
			checks[k] = v
		}
		s.mu.Unlock()
		for name, c := range checks {
			if err := c(ctx); err != nil {
				httpjson.WriteError(w, http.StatusServiceUnavailable, name+": "+err.Error())
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return httpjson.Routes(mux)
}

// Listen binds addr; Serve must follow. Split so callers learn bind errors
// synchronously.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	return nil
}

// Addr returns the bound address (after Listen).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is cancelled, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := s.srv.Shutdown(sctx)
		<-errc
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		return err
	}
}

// ServePprof serves net/http/pprof on addr until ctx ends. It returns once
// the listener is bound (the error of a bad or busy address, at start-up)
// with its address. The endpoint exposes the process's memory and
// command line: bind it to loopback or a private network, never publicly.
func ServePprof(ctx context.Context, addr string, log *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		stop := context.AfterFunc(ctx, func() { _ = hs.Close() })
		defer stop()
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server", "err", err)
		}
	}()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return ln.Addr(), nil
}
