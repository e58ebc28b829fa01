package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"runtime"
	"strings"
	"testing"
)

var retained [][]byte

// liveHeap reads the live heap after a forced GC: retaining 20 MiB more
// between two reads shows up as 20 MiB, within what the test's own
// goroutines allocate meanwhile.
func TestLiveHeap(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/heap", pprof.Index)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()

	before, err := liveHeap(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 20 << 10, 1 << 10
	for range n {
		retained = append(retained, make([]byte, size))
	}
	// Garbage must not count: the GC the read forces collects it.
	for range n {
		_ = make([]byte, size)
	}
	after, err := liveHeap(ctx, srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	got := float64(after) - float64(before)
	if want := float64(n * size); got < want*0.97 || got > want*1.05 {
		t.Errorf("live heap grew by %.0f bytes, want ~%.0f", got, want)
	}
	runtime.KeepAlive(retained)
	retained = nil

	if _, err := liveHeap(ctx, srv.URL+"/nothing-here"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("wrong URL: %v", err)
	}
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("hello\n")) }))
	defer plain.Close()
	if _, err := liveHeap(ctx, plain.URL); err == nil || !strings.Contains(err.Error(), "no HeapAlloc") {
		t.Errorf("not a pprof endpoint: %v", err)
	}
}
