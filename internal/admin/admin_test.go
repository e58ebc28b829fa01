package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	s := New(slog.New(slog.DiscardHandler))
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_test_things_total", Help: "things"})
	s.Registry.MustRegister(c)
	c.Add(3)
	var broken atomic.Bool
	s.AddCheck("dep", func(context.Context) error {
		if broken.Load() {
			return errors.New("dep down")
		}
		return nil
	})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	base := "http://" + s.Addr()

	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "herald_test_things_total 3") || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz: %d", code)
	}
	broken.Store(true)
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "dep down") {
		t.Fatalf("/readyz with a failing check: %d %q", code, body)
	}
	// Errors are JSON in the shape every Herald API answers.
	for _, tc := range []struct {
		method, path string
		code         int
		allow, want  string
	}{
		{"GET", "/readyz", 503, "", `{"error":"dep: dep down"}`},
		{"GET", "/nope", 404, "", `{"error":"no such endpoint: GET /nope"}`},
		{"POST", "/metrics", 405, "GET, HEAD", `{"error":"method POST not allowed on /metrics (allowed: GET, HEAD)"}`},
		{"GET", "/metrics?name=x", 400, "", `{"error":"unknown query parameter \"name\" (this endpoint takes none)","parameter":"name"}`},
		{"GET", "/healthz?verbose", 400, "", `{"error":"unknown query parameter \"verbose\" (this endpoint takes none)","parameter":"verbose"}`},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Allow") != tc.allow || strings.TrimSpace(string(b)) != tc.want {
			t.Errorf("%s %s: %d %q Allow %q %s, want %d %s", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), b, tc.code, tc.want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// ServePprof binds at once (a busy address is a start-up error), serves the
// heap profile the load tester's --server-pprof reads, and stops with ctx.
func TestServePprof(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := ServePprof(ctx, "127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	get := func() (string, error) {
		resp, err := http.Get("http://" + addr.String() + "/debug/pprof/heap?debug=1")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	body, err := get()
	if err != nil || !strings.Contains(body, "# HeapAlloc = ") {
		t.Fatalf("heap profile: %v %.200q", err, body)
	}
	if _, err := ServePprof(ctx, addr.String(), log); err == nil || !strings.Contains(err.Error(), "pprof listener") {
		t.Errorf("second listener on the same address: %v", err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := get(); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pprof still served after ctx ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
