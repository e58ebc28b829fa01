// Package testutil holds small helpers shared by tests of several packages.
// Only tests import it.
package testutil

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// MetricValue returns the value of a collector holding a single counter or
// gauge.
func MetricValue(tb testing.TB, c prometheus.Collector) float64 {
	tb.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var d dto.Metric
	if err := (<-ch).Write(&d); err != nil {
		tb.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	tb.Fatalf("not a counter or gauge: %v", &d)
	return 0
}

// Do sends a body-less request to rawURL with the headers in hdr (and a
// Bearer token when bearer is set) and returns the response, its body
// already read and closed.
func Do(tb testing.TB, method, rawURL, bearer string, hdr http.Header) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: reading the body: %v", method, rawURL, err)
	}
	return resp, body
}

// GetJSON GETs rawURL (with a Bearer token when bearer is set), decodes a
// 200 response into out (when non-nil) and returns the status code.
func GetJSON(tb testing.TB, rawURL, bearer string, out any) int {
	tb.Helper()
	resp, body := Do(tb, http.MethodGet, rawURL, bearer, nil)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			tb.Fatalf("GET %s: decoding %s: %v", rawURL, body, err)
		}
	}
	return resp.StatusCode
}

// LockedBuffer is a bytes.Buffer that several goroutines may write (a
// server's logger, a child process's output) while a test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// RunArchive starts an archive run on the cacher at cacherURL (POST
// /v1/archive/run) and waits up to timeout for it to succeed.
func RunArchive(tb testing.TB, cacherURL string, timeout time.Duration) {
	tb.Helper()
	resp, err := http.Post(cacherURL+"/v1/archive/run", "application/json", nil)
	if err != nil {
		tb.Fatalf("archive run: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		tb.Fatalf("archive run: %s: %s", resp.Status, body)
	}
	var run struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal(body, &run); err != nil || run.RunID == "" {
		tb.Fatalf("archive run: %s: no run_id in %s", resp.Status, body)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var status map[string]any
		if code := GetJSON(tb, cacherURL+"/v1/archive/runs/"+run.RunID, "", &status); code != http.StatusOK {
			tb.Fatalf("archive run status: %d", code)
		}
		switch status["status"] {
		case "succeeded":
			return
		case "failed":
			tb.Fatalf("archive run failed: %v", status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("archive run did not finish in %s", timeout)
}
