package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if v := os.Getenv(clientEnv); v != "" {
		clientMain(v) // this test binary started as the client process
	}
	if v := os.Getenv(echoEnv); v != "" {
		_ = runEcho(v) // started as the echo process of -hops
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFloorRuns: a small run delivers every round to every connection of
// the client process and reports it.
func TestFloorRuns(t *testing.T) {
	var out bytes.Buffer
	if err := runServer(&out, "127.0.0.1:0", 50, 2, 3, 50*time.Millisecond); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "last read"); n != 3 {
		t.Fatalf("want 3 rounds reported, got %d:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "median: writes") {
		t.Fatalf("no summary:\n%s", out.String())
	}
}

// TestHopsRuns: the hop mode completes its round trips through the echo
// process and reports both measurements.
func TestHopsRuns(t *testing.T) {
	var out bytes.Buffer
	if err := runHops(&out, 20, time.Millisecond); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "one-way hop p50"); n != 2 {
		t.Fatalf("want 2 measurements, got %d:\n%s", n, out.String())
	}
}
