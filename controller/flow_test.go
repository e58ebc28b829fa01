package controller

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSlowRelay: a relay that does not read is disconnected with
// ResourceExhausted while another relay keeps receiving everything.
func TestSlowRelay(t *testing.T) {
	const parts = 2
	brokers := startKafka(t)
	st := memstore.New()
	cfg := testConfig(brokers, parts, "c1")
	cfg.StreamQueue = 2
	c := startController(t, cfg, st)
	waitOwns(t, c.Server, parts)

	ch := "chat:big"
	slow := openRelay(t, c.Addr(), "slow", false, ch)
	fast := openRelay(t, c.Addr(), "fast", true, ch)
	waitFor(t, 10*time.Second, "interest", func() bool { return metricValue(c.m.interestChannels) == 1 && fast.lastOwnership() != nil })

	payload := `"` + strings.Repeat("x", 32<<10) + `"`
	n := 0
	for round := 0; round < 20 && metricValue(c.m.slowRelays) == 0; round++ {
		msgs := make([]*heraldv1.Message, 20)
		for i := range msgs {
			msgs[i] = testMessage(ch, n)
			msgs[i].Data = []byte(payload)
			n++
		}
		produce(t, brokers, parts, msgs)
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "slow relay disconnect", func() bool { return metricValue(c.m.slowRelays) == 1 })
	fast.waitCount(ch, n)
	checkDense(t, ch, fast.get(ch), 1, 0)

	// The slow relay sees what was queued, then the error.
	var err error
	for err == nil {
		_, err = slow.stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "slow relay") {
		t.Fatalf("slow relay stream ended with %v, want ResourceExhausted slow relay", err)
	}
	waitFor(t, 5*time.Second, "slow relay cleanup", func() bool { return metricValue(c.m.relayStreams) == 1 })
}

// gateStore blocks batch writes until the gate is opened.
type gateStore struct {
	*memstore.Store
	gate chan struct{}
}

func (s *gateStore) WriteBatch(ctx context.Context, b store.Batch) error {
	select {
	case <-s.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.WriteBatch(ctx, b)
}

// TestBackpressure: a partition whose store lags MaxBacklog messages stops
// being fetched, the live path keeps working for what was fetched, and
// fetching resumes when the store catches up, with dense seqs throughout.
func TestBackpressure(t *testing.T) {
	const parts = 1
	brokers := startKafka(t)
	mem := memstore.New()
	st := &gateStore{Store: mem, gate: make(chan struct{})}
	cfg := testConfig(brokers, parts, "c1")
	cfg.MaxBacklog = 50
	cfg.BatchMessages = 10
	c := startController(t, cfg, st)
	waitOwns(t, c.Server, parts)
	ch := "chat:pressure"
	relay := openRelay(t, c.Addr(), "relay", true, ch)
	waitFor(t, 10*time.Second, "interest", func() bool { return metricValue(c.m.interestChannels) == 1 })

	produce(t, brokers, parts, interleaved([]string{ch}, 0, 100))
	relay.waitCount(ch, 100)
	waitFor(t, 10*time.Second, "pause", func() bool { return metricValue(c.m.pausedPartitions) == 1 })
	if got := metricValue(c.m.backlog); got != 100 {
		t.Fatalf("unpersisted_backlog = %v, want 100", got)
	}
	produce(t, brokers, parts, interleaved([]string{ch}, 100, 100))
	time.Sleep(300 * time.Millisecond)
	if got := metricValue(c.m.recordsConsumed); got != 100 {
		t.Fatalf("consumed %v records while paused, want 100", got)
	}

	close(st.gate)
	relay.waitCount(ch, 200)
	checkDense(t, ch, relay.get(ch), 1, 0)
	storedDense(t, mem, ch, 200)
	waitFor(t, 10*time.Second, "resume and drain", func() bool {
		return metricValue(c.m.pausedPartitions) == 0 && metricValue(c.m.backlog) == 0
	})
}

// TestStoreErrorsRetried: failed batch writes are retried, never dropped.
func TestStoreErrorsRetried(t *testing.T) {
	brokers := startKafka(t)
	mem := memstore.New()
	st := &flakyStore{Store: mem, fails: 3}
	c := startController(t, testConfig(brokers, 1, "c1"), st)
	waitOwns(t, c.Server, 1)
	produce(t, brokers, 1, interleaved([]string{"chat:a", "chat:b"}, 0, 20))
	storedDense(t, mem, "chat:a", 20)
	storedDense(t, mem, "chat:b", 20)
	if got := metricValue(c.m.storeErrors); got != 3 {
		t.Fatalf("store_errors_total = %v, want 3", got)
	}
}

type flakyStore struct {
	*memstore.Store
	fails int // guarded by the single writer of partition 0
}

func (s *flakyStore) WriteBatch(ctx context.Context, b store.Batch) error {
	if s.fails > 0 {
		s.fails--
		return store.ErrUnavailable
	}
	return s.Store.WriteBatch(ctx, b)
}

func TestRing(t *testing.T) {
	pub := func(seq uint64) *heraldv1.Publication { return &heraldv1.Publication{Seq: seq} }
	tests := []struct {
		name       string
		size, push int
		since      uint64
		want       []uint64
		wantOldest uint64
	}{
		{"empty", 4, 0, 0, nil, 0},
		{"partial all", 4, 3, 0, []uint64{1, 2, 3}, 1},
		{"partial tail", 4, 3, 2, []uint64{3}, 1},
		{"partial none", 4, 3, 3, nil, 1},
		{"wrapped all", 4, 10, 0, []uint64{7, 8, 9, 10}, 7},
		{"wrapped tail", 4, 10, 8, []uint64{9, 10}, 7},
		{"wrapped exact", 4, 10, 6, []uint64{7, 8, 9, 10}, 7},
		{"disabled", 0, 10, 0, nil, 0},
		{"big", 128, 300, 250, seqs(251, 300), 173},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c chanState
			for i := 1; i <= tc.push; i++ {
				c.push(pub(uint64(i)), tc.size)
			}
			if cap(c.ring) > tc.size {
				t.Fatalf("ring capacity %d above size %d", cap(c.ring), tc.size)
			}
			got, oldest := c.since(tc.since)
			if oldest != tc.wantOldest {
				t.Fatalf("oldest = %d, want %d", oldest, tc.wantOldest)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d publications, want %v", len(got), tc.want)
			}
			for i, p := range got {
				if p.Seq != tc.want[i] {
					t.Fatalf("publication %d seq %d, want %d", i, p.Seq, tc.want[i])
				}
			}
		})
	}
}

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestInterest(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	in := newInterest(m)
	r1, r2 := newRelayStream("r1", 8), newRelayStream("r2", 8)
	in.add("a", r1)
	in.add("a", r2)
	in.add("b", r2)
	if got := metricValue(m.interestChannels); got != 2 {
		t.Fatalf("interest_channels = %v, want 2", got)
	}
	f := newFanout(in)
	for _, ch := range []string{"a", "b", "c", "a"} {
		f.route(&heraldv1.Publication{Channel: ch})
	}
	if len(r1.pending) != 2 || len(r2.pending) != 3 || len(f.touched) != 2 {
		t.Fatalf("routed %d to r1, %d to r2; want 2, 3", len(r1.pending), len(r2.pending))
	}
	if n := f.flush(m); n != 5 || len(r1.queue) != 1 || len(r2.queue) != 1 {
		t.Fatalf("flush enqueued %d publications, queues %d/%d", n, len(r1.queue), len(r2.queue))
	}
	in.remove("a", r1)
	in.remove("a", r2)
	in.remove("a", r2) // not there any more: no-op
	if got := metricValue(m.interestChannels); got != 1 {
		t.Fatalf("interest_channels = %v, want 1", got)
	}
}

func TestEpochFor(t *testing.T) {
	a := epochFor("log-1", "chat:a")
	if a != epochFor("log-1", "chat:a") || len(a) != 16 {
		t.Fatalf("epoch %q not deterministic from log and channel", a)
	}
	if a == epochFor("log-1", "chat:b") || a == epochFor("log-2", "chat:a") {
		t.Fatal("epochs collide across channels or logs")
	}
}

func TestConfig(t *testing.T) {
	t.Setenv("HERALD_KAFKA_BROKERS", "k1:9092, k2:9092")
	t.Setenv("HERALD_KAFKA_PARTITIONS", "24")
	var c Config
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-kafka-topic", "t2", "-batch-interval", "5ms"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8090" || len(c.Brokers) != 2 || c.Brokers[1] != "k2:9092" || c.Partitions != 24 ||
		c.Topic != "t2" || c.Group != "herald-controller" || c.ID == "" || c.RingSize != 128 ||
		c.BatchMessages != 1000 || c.BatchInterval != 5*time.Millisecond || c.MaxBacklog != 50000 || c.StreamQueue != 1024 ||
		c.SessionTimeout != 45*time.Second {
		t.Fatalf("unexpected config %+v", c)
	}
	c.Partitions, c.StreamQueue, c.Brokers = 0, 0, nil
	err := c.Validate()
	for _, want := range []string{"HERALD_KAFKA_PARTITIONS", "HERALD_CONTROLLER_STREAM_QUEUE", "HERALD_KAFKA_BROKERS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want mention of %s", err, want)
		}
	}
}

func TestEnsureTopic(t *testing.T) {
	brokers := startKafka(t)
	ctx := context.Background()
	if err := EnsureTopic(ctx, brokers, "t", 3); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopic(ctx, brokers, "t", 3); err != nil {
		t.Fatalf("existing topic: %v", err)
	}
	if err := EnsureTopic(ctx, brokers, "t", 4); err == nil {
		t.Fatal("partition count mismatch not reported")
	}
}
