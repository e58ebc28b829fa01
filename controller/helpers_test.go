package controller

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

const testTopic = "herald.messages"

func testLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("HERALD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startKafka runs an in-process kfake cluster (the topic is created by the
// controller's Run, or by EnsureTopic).
func startKafka(tb testing.TB) []string {
	tb.Helper()
	return startCluster(tb, 1).ListenAddrs()
}

// startCluster runs an in-process kfake cluster of n brokers.
func startCluster(tb testing.TB, n int) *kfake.Cluster {
	tb.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(n), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		tb.Fatalf("kfake: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

func testConfig(brokers []string, parts int32, id string) Config {
	return Config{
		Addr:            "127.0.0.1:0",
		Brokers:         brokers,
		Topic:           testTopic,
		Partitions:      parts,
		Group:           "herald-controller",
		ID:              id,
		RingSize:        16,
		BatchMessages:   100,
		BatchInterval:   5 * time.Millisecond,
		MaxBacklog:      50000,
		StreamQueue:     1024,
		ShutdownTimeout: 5 * time.Second,
	}
}

// fastGroup makes group membership changes quick on kfake.
func fastGroup() []kgo.Opt {
	return []kgo.Opt{
		kgo.SessionTimeout(1500 * time.Millisecond),
		kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.RebalanceTimeout(5 * time.Second),
	}
}

type runningController struct {
	*Server
	cancel context.CancelFunc
	done   chan error
}

// stop cancels Run and waits for it.
func (rc *runningController) stop(tb testing.TB) {
	tb.Helper()
	rc.cancel()
	select {
	case err := <-rc.done:
		if err != nil {
			tb.Errorf("controller %s Run: %v", rc.cfg.ID, err)
		}
	case <-time.After(30 * time.Second):
		tb.Fatalf("controller %s did not stop", rc.cfg.ID)
	}
	rc.done <- nil // later stops are no-ops
}

func startController(tb testing.TB, cfg Config, st store.Store, mutate ...func(*Server)) *runningController {
	tb.Helper()
	s, err := New(cfg, st, testLogger(tb).With("controller", cfg.ID), prometheus.NewRegistry(), fastGroup()...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	for _, f := range mutate {
		f(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningController{Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-rc.done:
		case <-time.After(30 * time.Second):
			tb.Errorf("controller %s did not stop", cfg.ID)
		}
	})
	return rc
}

// waitFor polls cond until it is true or the timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startSolo starts a Kafka cluster and one controller "c1" over a memory
// store, and waits until it owns all parts partitions.
func startSolo(tb testing.TB, parts int) ([]string, *memstore.Store, *runningController) {
	tb.Helper()
	brokers := startKafka(tb)
	st := memstore.New()
	c := startController(tb, testConfig(brokers, int32(parts), "c1"), st)
	waitOwns(tb, c.Server, parts)
	return brokers, st, c
}

func waitOwns(tb testing.TB, s *Server, n int) {
	tb.Helper()
	waitFor(tb, 20*time.Second, fmt.Sprintf("%s to own %d partitions", s.cfg.ID, n), func() bool {
		return len(s.Ownership().Partitions) == n
	})
}

func testMessage(ch string, i int) *heraldv1.Message {
	return &heraldv1.Message{
		Id:          fmt.Sprintf("%s-%05d", ch, i),
		Channel:     ch,
		Sender:      "user-1",
		Info:        []byte(`{"name":"u"}`),
		Data:        []byte(fmt.Sprintf(`{"i":%d}`, i)),
		PublishedAt: time.Now().UnixMilli(),
	}
}

// interleaved returns n messages per channel, round-robin over channels, with
// ids numbered from first.
func interleaved(channels []string, first, n int) []*heraldv1.Message {
	var out []*heraldv1.Message
	for i := first; i < first+n; i++ {
		for _, ch := range channels {
			out = append(out, testMessage(ch, i))
		}
	}
	return out
}

func channelNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("chat:room-%d", i)
	}
	return out
}

// produce writes msgs in order, each to its channel's partition.
func produce(tb testing.TB, brokers []string, parts int32, msgs []*heraldv1.Message) {
	tb.Helper()
	values := make([][]byte, len(msgs))
	for i, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		values[i] = b
	}
	produceRaw(tb, brokers, parts, func(i int) (string, []byte) { return msgs[i].Channel, values[i] }, len(msgs))
}

func produceRaw(tb testing.TB, brokers []string, parts int32, rec func(i int) (key string, value []byte), n int) {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(testTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		k, v := rec(i)
		recs[i] = &kgo.Record{Key: []byte(k), Value: v, Partition: partition.For(k, parts)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		tb.Fatalf("producing: %v", err)
	}
}

// testRelay is a relay's side of a Router stream.
type testRelay struct {
	tb     testing.TB
	stream grpc.BidiStreamingClient[heraldv1.RelayMessage, heraldv1.ControllerMessage]
	cancel context.CancelFunc

	mu   sync.Mutex
	pubs map[string][]*heraldv1.Publication
	owns []*heraldv1.Ownership
	// events are the join/leave events received, in order.
	events []*heraldv1.PresenceEvent
	err    error
	done   chan struct{}
}

func dialController(tb testing.TB, addr string) heraldv1.RouterClient {
	tb.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return heraldv1.NewRouterClient(cc)
}

// openRelay opens a stream, says hello and adds interest in channels. With
// read false it never reads (a slow relay).
func openRelay(tb testing.TB, addr, id string, read bool, channels ...string) *testRelay {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := dialController(tb, addr).Stream(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	r := &testRelay{tb: tb, stream: st, cancel: cancel, pubs: map[string][]*heraldv1.Publication{}, done: make(chan struct{})}
	tb.Cleanup(r.close)
	if err := st.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Hello{Hello: &heraldv1.Hello{RelayId: id}}}); err != nil {
		tb.Fatal(err)
	}
	r.interest(channels, nil)
	if read {
		go r.readLoop()
	}
	return r
}

func (r *testRelay) interest(add, remove []string) {
	if len(add) == 0 && len(remove) == 0 {
		return
	}
	err := r.stream.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Interest{Interest: &heraldv1.InterestDelta{Add: add, Remove: remove}}})
	if err != nil {
		r.tb.Fatal(err)
	}
}

func (r *testRelay) readLoop() {
	defer close(r.done)
	for {
		m, err := r.stream.Recv()
		if err != nil {
			r.mu.Lock()
			r.err = err
			r.mu.Unlock()
			return
		}
		r.mu.Lock()
		if b := m.GetBatch(); b != nil {
			for _, p := range b.Publications {
				r.pubs[p.Channel] = append(r.pubs[p.Channel], p)
			}
		}
		if o := m.GetOwnership(); o != nil {
			r.owns = append(r.owns, o)
		}
		if pe := m.GetPresence(); pe != nil {
			r.events = append(r.events, pe.Events...)
		}
		r.mu.Unlock()
	}
}

func (r *testRelay) close() {
	r.cancel()
}

func (r *testRelay) count(ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pubs[ch])
}

func (r *testRelay) get(ch string) []*heraldv1.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.pubs[ch])
}

func (r *testRelay) channels() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for ch := range r.pubs {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}

func (r *testRelay) lastOwnership() *heraldv1.Ownership {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.owns) == 0 {
		return nil
	}
	return r.owns[len(r.owns)-1]
}

func (r *testRelay) waitCount(ch string, n int) {
	r.tb.Helper()
	waitFor(r.tb, 20*time.Second, fmt.Sprintf("%d publications of %s", n, ch), func() bool { return r.count(ch) >= n })
}

// checkDense asserts pubs are exactly seqs first..first+len-1 of one epoch,
// and that message ids follow the produce order (ids numbered from firstID).
func checkDense(tb testing.TB, ch string, pubs []*heraldv1.Publication, firstSeq uint64, firstID int) {
	tb.Helper()
	for i, p := range pubs {
		if want := firstSeq + uint64(i); p.Seq != want {
			tb.Fatalf("%s: publication %d has seq %d, want %d", ch, i, p.Seq, want)
		}
		if p.Epoch == "" || p.Epoch != pubs[0].Epoch {
			tb.Fatalf("%s: publication %d epoch %q, first epoch %q", ch, i, p.Epoch, pubs[0].Epoch)
		}
		if want := fmt.Sprintf("%s-%05d", ch, firstID+i); p.Message.GetId() != want {
			tb.Fatalf("%s: seq %d carries message %s, want %s (Kafka order)", ch, p.Seq, p.Message.GetId(), want)
		}
		if p.Channel != ch || p.Message.GetChannel() != ch {
			tb.Fatalf("publication of %s in channel %s", p.Channel, ch)
		}
	}
}

// storedDense waits until the store holds exactly seqs 1..n of ch and
// returns them; ids must follow the produce order.
func storedDense(tb testing.TB, st store.Store, ch string, n int) []store.Message {
	tb.Helper()
	var msgs []store.Message
	waitFor(tb, 20*time.Second, fmt.Sprintf("%d stored messages of %s", n, ch), func() bool {
		var err error
		msgs, err = st.Messages(context.Background(), store.Range{Channel: ch, From: 1, To: 1 << 40})
		return err == nil && len(msgs) >= n
	})
	if len(msgs) != n {
		tb.Fatalf("%s: %d stored messages, want %d", ch, len(msgs), n)
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) {
			tb.Fatalf("%s: stored message %d has seq %d", ch, i, m.Seq)
		}
		if want := fmt.Sprintf("%s-%05d", ch, i); m.ID != want {
			tb.Fatalf("%s: stored seq %d is message %s, want %s", ch, m.Seq, m.ID, want)
		}
	}
	return msgs
}

func marshal(m *heraldv1.Message) ([]byte, error) { return proto.Marshal(m) }

// metricValue reads a counter or gauge.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// waitSeq waits until the relay received seq of ch.
func (r *testRelay) waitSeq(ch string, seq uint64) {
	r.tb.Helper()
	waitFor(r.tb, 20*time.Second, fmt.Sprintf("seq %d of %s", seq, ch), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		p := r.pubs[ch]
		return len(p) > 0 && p[len(p)-1].Seq >= seq
	})
}
