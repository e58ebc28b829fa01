package main

import (
	"strings"
	"testing"

	"github.com/herald-chat/herald/loadtest"
)

func chatRun(rep string, p50, p99, relay, ctrl float64, lost uint64) run {
	return run{scenario: "chat-1k", server: "herald", rep: rep, loadBefore: "load" + rep, res: &loadtest.Result{
		Latency:    map[string]loadtest.LatencySummary{"publish_to_delivery": {P50: p50, P99: p99, P999: p99 + 1}},
		Throughput: loadtest.Throughput{DeliveriesPerS: 10000},
		Delivery:   loadtest.DeliveryStats{Lost: lost},
		Procs: []loadtest.ProcStats{{Name: "relay", USPerDelivery: relay, USPerPublish: relay * 10},
			{Name: "controller", USPerDelivery: ctrl, USPerPublish: ctrl * 10}},
	}}
}

// TestMedians: scenarios run more than once get a median row (every figure
// its own median, losses summed); single runs get none; the markdown shows
// the medians table only then.
func TestMedians(t *testing.T) {
	runs := []run{
		chatRun("1", 3.0, 9.0, 35, 20, 0),
		chatRun("2", 2.0, 30.0, 40, 25, 1),
		chatRun("3", 4.0, 8.0, 30, 22, 0),
		{scenario: "lone", server: "herald", rep: "1", res: &loadtest.Result{Latency: map[string]loadtest.LatencySummary{}}},
	}
	med := medians(runs)
	if len(med) != 1 {
		t.Fatalf("want one median row (chat-1k), got %d", len(med))
	}
	got := strings.Join(cells(med[0]), " | ")
	for _, want := range []string{"Herald (median of 3)", "3.00 / 9.00 / 10.0", "1 / 0", "35.0", "22.0", "**57.0**", "load1 … load3"} {
		if !strings.Contains(got, want) {
			t.Errorf("median row %q lacks %q", got, want)
		}
	}
	md := markdown(runs, map[string]float64{"1": 90, "2": 110, "3": 100}, "meta", "dir")
	if !strings.Contains(md, "Medians over the passes") || !strings.Contains(md, "median of the 3 passes: **100.0 ms**") {
		t.Errorf("markdown lacks the medians:\n%s", md)
	}
	if md := markdown(runs[3:], nil, "meta", "dir"); strings.Contains(md, "Medians") {
		t.Errorf("single runs got a medians table:\n%s", md)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 1..4 = %v, want 2.5", m)
	}
}

// TestSeveralRelaysSummed: with make compare RELAYS=N the relay column is
// the sum over relay, relay2 … (marked with their count), in each run's
// row and in the medians; a process merely named like a prefix is not
// counted.
func TestSeveralRelaysSummed(t *testing.T) {
	four := func(rep string, each float64) run {
		r := chatRun(rep, 3, 9, each, 20, 0)
		for _, name := range []string{"relay2", "relay3", "relay4"} {
			r.res.Procs = append(r.res.Procs, loadtest.ProcStats{Name: name, USPerDelivery: each, USPerPublish: each * 10})
		}
		r.res.Procs = append(r.res.Procs, loadtest.ProcStats{Name: "relayer", USPerDelivery: 1000})
		return r
	}
	runs := []run{four("1", 10), four("2", 12), four("3", 11)}
	got := strings.Join(cells(runs[0]), " | ")
	for _, want := range []string{"| 40.0 (4) |", "| 20.0 |"} {
		if !strings.Contains(got, want) {
			t.Errorf("row %q lacks %q", got, want)
		}
	}
	med := strings.Join(cells(medians(runs)[0]), " | ")
	if !strings.Contains(med, "| 44.0 |") || !strings.Contains(med, "**64.0**") {
		t.Errorf("median row %q: want the relays' summed median 44.0 and the total 64.0", med)
	}
}
