package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/loadtest"
)

func sampleRuns(t testing.TB) []Run {
	t.Helper()
	var runs []Run
	for _, spec := range []string{"idle=testdata/idle.json", "broadcast-1k=testdata/broadcast.json", "chat=testdata/chat.json"} {
		r, err := loadRun(spec)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	return runs
}

func TestTables(t *testing.T) {
	runs := sampleRuns(t)
	tests := []struct {
		name  string
		table string
		want  []string
	}{
		{"throughput", ThroughputTable(runs), []string{
			"| run | scenario | connections (ready / target) | channels | target msg/s | publishes/s | deliveries/s | delivery p50 / p99 / p99.9 / max (ms) | publish ack p50 / p99 (ms) | lost / dup / ooo |",
			"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
			"| idle | idle | 2,000 / 2,000 | 1 | — | — | — | — | — | — |",
			"| broadcast-1k | broadcast | 1,001 / 1,001 | 1 | 10 | 10 | 10,000 | 4.56 / 21.4 / 48.7 / 133 | 1.23 / 8.50 | 0 / 0 / 0 |",
			"| chat (aborted) | chat | 998 / 1,000 | 100 | 500 | 493 | 4,933 | 6.00 / 150 / 420 / 1,235 | 3.30 / 25.0 | 10 / 0 / 1 |",
		}},
		{"resources", ResourceTable(runs), []string{
			"| run | connected / failed | connect p50 / p99 (ms) | subscribe p50 / p99 (ms) | server RSS max | RSS / conn | server CPU avg | load tester CPU avg |",
			"|---|---:|---:|---:|---:|---:|---:|---:|",
			"| idle | 2,000 / 0 | 2.50 / 14.2 | 0.61 / 7.10 | 100.0 MiB | 20.5 KiB | 3% | 1% |",
			"| broadcast-1k | 1,001 / 0 | 2.10 / 9.87 | 0.50 / 3.30 | — | — | — | 42% |",
			"| chat | 998 / 2 | 2.00 / 11.0 | 0.70 / 4.00 | — | — | — | 55% |",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Split(strings.TrimSuffix(tt.table, "\n"), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(got), len(tt.want), tt.table)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d:\n got %s\nwant %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestArgs(t *testing.T) {
	runs := sampleRuns(t)
	want := map[string]string{
		"idle":         "--conns 2000 --channels 1 --connect-rate 1000 --warmup 2s --duration 10s --drain 0s",
		"broadcast-1k": "--conns 1000 --channels 1 --rate 10 --publishers 1 --payload 64 --connect-rate 1000 --warmup 3s --duration 15s --drain 3s",
		"chat":         "--conns 1000 --channels 100 --rate 500 --payload 64 --connect-rate 1000 --warmup 3s --duration 15s --drain 3s",
	}
	for _, r := range runs {
		if got := strings.Join(Args(&r.Result.Config), " "); got != want[r.Name] {
			t.Errorf("%s: got %s\nwant %s", r.Name, got, want[r.Name])
		}
		// The reconstructed flags parse and describe the same run.
		cfg, err := loadtest.ParseArgs(append([]string{r.Result.Scenario, "--secret", "s"}, Args(&r.Result.Config)...), io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		if cfg.Conns != r.Result.Config.Conns || cfg.Rate != r.Result.Config.Rate || cfg.Duration != r.Result.Config.Duration {
			t.Errorf("%s: parsed %+v", r.Name, cfg)
		}
	}
}

func TestTOC(t *testing.T) {
	doc := "# Performance\n\n## Contents\n\n## Method / how to reproduce\n\n```sh\n## not a heading\n```\n\n" +
		"## Controller: routing, batch writer, consume → stream\n\n### Routing through the interest map (`BenchmarkRoute`)\n\n## Notes\n\n## Notes\n"
	want := "- [Method / how to reproduce](#method--how-to-reproduce)\n" +
		"- [Controller: routing, batch writer, consume → stream](#controller-routing-batch-writer-consume--stream)\n" +
		"  - [Routing through the interest map (BenchmarkRoute)](#routing-through-the-interest-map-benchmarkroute)\n" +
		"- [Notes](#notes)\n" +
		"- [Notes](#notes-1)\n"
	if got := TOC(doc); got != want {
		t.Errorf("TOC:\n%s\nwant:\n%s", got, want)
	}
}

func TestUpdateKeepsOtherSections(t *testing.T) {
	doc := "# Performance\n\nIntro.\n\n## Contents\n\n" + tocBegin + "\nold toc\n" + tocEnd + "\n\n## Load test results\n\n" +
		reportBegin + "\nold numbers\n" + reportEnd + "\n\n## History reads\n\nTheir text | kept.\n"
	rep := Report{Date: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), Runs: sampleRuns(t), Machine: Machine{CPUs: "2", Memory: "23"}}
	out, err := Update(doc, rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Intro.\n", "## History reads\n\nTheir text | kept.\n",
		"- [Load test results](#load-test-results)\n- [History reads](#history-reads)\n" + tocEnd,
		"Generated 2026-11-27 10:00 UTC by `make perf-report` (scale: modest).",
		"| broadcast-1k | broadcast | 1,001 / 1,001 |",
		"make loadtest SCENARIO=idle ARGS='--conns 2000 --channels 1 --connect-rate 1000 --warmup 2s --duration 10s --drain 0s'   # idle",
		"- chat: 10 deliveries lost, 1 deliveries out of order, 2 connections failed, 3 publish errors, aborted",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, gone := range []string{"old toc", "old numbers"} {
		if strings.Contains(out, gone) {
			t.Errorf("output still has %q", gone)
		}
	}
	// Regenerating is stable.
	again, err := Update(out, rep)
	if err != nil || again != out {
		t.Errorf("second update differs (err %v)", err)
	}
	if _, err := Update("# no markers\n", rep); err == nil {
		t.Error("missing markers: want an error")
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "performance.md")
	body := "# P\n\n" + tocBegin + "\n" + tocEnd + "\n\n## Results\n\n" + reportBegin + "\n" + reportEnd + "\n"
	if err := os.WriteFile(doc, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"--doc", doc, "--load-before", "1.00 2.00 3.00 1/100 42", "idle=testdata/idle.json"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, "| idle | idle | 2,000 / 2,000 |") || !strings.Contains(s, "before the runs 1.00 / 2.00 / 3.00") {
		t.Errorf("document:\n%s", s)
	}
	for _, args := range [][]string{
		{},
		{"--scale", "huge", "idle=testdata/idle.json"},
		{"idle"},
		{"--nope"},
	} {
		if err := run(args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	if err := run([]string{"--stdout", "x=testdata/missing.json"}, io.Discard, io.Discard); err == nil {
		t.Error("missing results file: want an error")
	}

	// --toc-only: a section added by hand gets its entry, the report stays.
	if err := os.WriteFile(doc, append(b, "\n## Added by hand\n\nText.\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"--doc", doc, "--toc-only"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(after); !strings.Contains(s, "- [Added by hand](#added-by-hand)") || !strings.Contains(s, "| idle | idle | 2,000 / 2,000 |") {
		t.Errorf("after --toc-only:\n%s", s)
	}
	if err := run([]string{"--doc", doc, "--toc-only", "idle=testdata/idle.json"}, io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("--toc-only with results = %v, want a usage error", err)
	}
}
