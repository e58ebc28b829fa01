package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
)

// producer produces rounds of one message per channel, numbering each
// channel's messages from 0 in produce order. Everything it counts was acked.
type producer struct {
	tb       testing.TB
	brokers  []string
	parts    int32
	channels []string
	cl       *kgo.Client

	mu sync.Mutex
	n  int // messages produced (and acked) per channel
}

func newProducer(tb testing.TB, brokers []string, parts int32, channels []string) *producer {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(testTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cl.Close)
	return &producer{tb: tb, brokers: brokers, parts: parts, channels: channels, cl: cl}
}

// rounds produces k messages per channel, acks awaited.
func (p *producer) rounds(k int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var recs []*kgo.Record
	for _, m := range interleaved(p.channels, p.n, k) {
		v, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		recs = append(recs, &kgo.Record{Key: []byte(m.Channel), Value: v, Partition: partition.For(m.Channel, p.parts)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("producing: %w", err)
	}
	p.n += k
	return nil
}

func (p *producer) must(k int) {
	p.tb.Helper()
	if err := p.rounds(k); err != nil {
		p.tb.Fatal(err)
	}
}

func (p *producer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// load produces one round every interval until stop is called; stop returns
// the first produce error.
func (p *producer) load(interval time.Duration) (stop func() error) {
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				errc <- nil
				return
			case <-t.C:
			}
			if err := p.rounds(1); err != nil {
				errc <- err
				return
			}
		}
	}()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { close(done); err = <-errc })
		return err
	}
}

// TestCrashInjection kills a controller at each step of persistence, one
// after the other on the same log and store, and restarts it: with nothing
// persisted (batch pending), after a batch's messages and heads but before
// its checkpoint, in the middle of a batch's messages, and when a write
// starts. Messages are also produced while no controller runs. In the end
// every acked message is stored exactly once with seqs 1..N in Kafka order,
// and the relay — dropping seq <= last and filling gaps from Recover, as a
// relay does — saw 1..N of every channel, any replay on the wire carrying
// the identical message.
func TestCrashInjection(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, ts testStore) {
		const parts = 2
		brokers := startKafka(t)
		st := ts.open(t)
		chans := channelNames(4)
		prod := newProducer(t, brokers, parts, chans)
		view := newRelayView(t)

		// Nothing persisted: the batch writer never flushes before the crash.
		cfg := testConfig(brokers, parts, "c0")
		cfg.BatchInterval, cfg.BatchMessages = time.Hour, 1<<20
		c := startCrashable(t, cfg, st)
		waitOwns(t, c.Server, parts)
		view.attach(c.Addr(), "c0", chans...)
		prod.must(10)
		view.waitAll(chans, prod.count())
		c.crash()
		for p := int32(0); p < parts; p++ {
			if ps, err := st.LoadPartition(context.Background(), p); err != nil || ps.NextOffset != 0 {
				t.Fatalf("partition %d checkpoint %d (%v) after a crash with nothing flushed", p, ps.NextOffset, err)
			}
		}

		steps := []struct {
			name string
			mode crashMode
		}{
			{"after messages and heads, before checkpoint", crashAfterHeads},
			{"in the middle of a batch", crashMidBatch},
			{"when a write starts", crashBeforeWrite},
		}
		for i, step := range steps {
			id := fmt.Sprintf("c%d", i+1)
			c := startCrashable(t, testConfig(brokers, parts, id), st)
			view.attach(c.Addr(), id, chans...)
			waitOwns(t, c.Server, parts)
			waitCheckpoints(t, brokers, st, parts) // the replay is persisted
			storedAll(t, st, chans, prod.count())
			c.store.arm(step.mode)
			prod.must(10)
			c.crashed(t)
			t.Logf("crashed %s %s with %d messages per channel produced", id, step.name, prod.count())
			prod.must(3) // while no controller runs
		}

		c4 := startController(t, testConfig(brokers, parts, "c4"), st)
		view.attach(c4.Addr(), "c4", chans...)
		waitOwns(t, c4.Server, parts)
		prod.must(5)
		n := prod.count()
		storedAll(t, st, chans, n)
		waitCheckpoints(t, brokers, st, parts)
		view.check(chans, n)
		t.Logf("%d messages per channel; the relay dropped %d identical replays and recovered %d", n, view.dups, view.recovered)
	})
}

// TestCrashDuringRebalance: a second controller joins while the first is in
// the middle of a batch write (held by the store), so the first must flush
// the partitions it gives up; it crashes during that flush. The second takes
// over everything and the guarantees hold.
func TestCrashDuringRebalance(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, ts testStore) {
		const parts = 4
		brokers := startKafka(t)
		st := ts.open(t)
		chans := channelNames(8)
		prod := newProducer(t, brokers, parts, chans)
		view := newRelayView(t)

		cfg := testConfig(brokers, parts, "a")
		cfg.ShutdownTimeout = 3 * time.Second // the revocation's flush waits that long for the store
		a := startCrashable(t, cfg, st)
		waitOwns(t, a.Server, parts)
		view.attach(a.Addr(), "a", chans...)
		prod.must(10)
		waitCheckpoints(t, brokers, st, parts)

		release := a.store.holdWrites()
		defer release()
		prod.must(10)
		view.waitAll(chans, prod.count()) // streamed live, not persisted
		waitFor(t, 10*time.Second, "a batch write in flight", func() bool { return a.store.holds.Load() > 0 })

		b := startController(t, testConfig(brokers, parts, "b"), st)
		view.attach(b.Addr(), "b", chans...)
		waitFor(t, 30*time.Second, "a to start giving partitions up", func() bool {
			return len(a.Ownership().Partitions) < parts
		})
		a.crash()
		waitOwns(t, b.Server, parts)
		waitFor(t, 10*time.Second, "b's ownership of every partition announced", func() bool {
			o := view.ownership("b")
			return o != nil && len(o.Partitions) == parts && o.ControllerId == "b"
		})
		prod.must(10)
		n := prod.count()
		storedAll(t, st, chans, n)
		waitCheckpoints(t, brokers, st, parts)
		view.check(chans, n)
	})
}

// TestTwoControllersCrashUnderLoad: two controllers share the partitions
// under a steady produce load; one crashes. The other takes its partitions
// over within the session timeout, announces them, and live delivery of
// their channels resumes from it; nothing is lost, repeated or reordered.
func TestTwoControllersCrashUnderLoad(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, ts testStore) {
		const parts = 4
		brokers := startKafka(t)
		st := ts.open(t)
		chans := channelNames(8)
		prod := newProducer(t, brokers, parts, chans)
		view := newRelayView(t)
		every := 10 * time.Millisecond
		if ts.name == "mongo-ferret" {
			every = 80 * time.Millisecond // FerretDB is slow; keep its data small
		}

		a := startCrashable(t, testConfig(brokers, parts, "a"), st)
		waitOwns(t, a.Server, parts)
		b := startController(t, testConfig(brokers, parts, "b"), st)
		waitFor(t, 30*time.Second, "the partitions to be split", func() bool {
			oa, ob := a.Ownership().Partitions, b.Ownership().Partitions
			return len(oa) > 0 && len(ob) > 0 && len(oa)+len(ob) == parts
		})
		view.attach(a.Addr(), "a", chans...)
		view.attach(b.Addr(), "b", chans...)
		waitFor(t, 10*time.Second, "ownership announcements", func() bool {
			return view.ownership("a") != nil && view.ownership("b") != nil
		})

		stop := prod.load(every)
		defer stop()
		time.Sleep(500 * time.Millisecond)
		ownedByA := slices.Clone(a.Ownership().Partitions)
		a.crash()
		crashedAt := time.Now()
		waitFor(t, 30*time.Second, "b to announce every partition", func() bool {
			o := view.ownership("b")
			return o != nil && len(o.Partitions) == parts
		})
		t.Logf("failover: b announced all partitions %s after the crash", time.Since(crashedAt).Round(time.Millisecond))
		// Live delivery of a's channels resumes from b.
		var moved []string
		for _, ch := range chans {
			if slices.Contains(ownedByA, partition.For(ch, parts)) {
				moved = append(moved, ch)
			}
		}
		if len(moved) == 0 {
			t.Fatal("a owned none of the test channels")
		}
		at := prod.count()
		for _, ch := range moved {
			waitFor(t, 20*time.Second, "live delivery of "+ch+" from b", func() bool { return view.liveAfter("b", ch, uint64(at)) })
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		n := prod.count()
		storedAll(t, st, chans, n)
		waitCheckpoints(t, brokers, st, parts)
		view.check(chans, n)
		t.Logf("%d messages per channel under load; relay dropped %d identical replays, recovered %d", n, view.dups, view.recovered)
	})
}

// TestStoreUnavailable: while the store answers ErrUnavailable, the live
// path keeps streaming what was fetched, the backlog grows to its bound,
// fetching pauses; when the store is back everything is persisted exactly
// once and consumption catches up.
func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, ts testStore) {
		const parts = 1
		brokers := startKafka(t)
		backing := ts.open(t)
		st := &downStore{Store: backing}
		st.down.Store(true)
		cfg := testConfig(brokers, parts, "c1")
		cfg.MaxBacklog = 50
		cfg.BatchMessages = 10
		c := startController(t, cfg, st)
		waitOwns(t, c.Server, parts)
		chans := []string{"chat:down"}
		relay := openRelay(t, c.Addr(), "relay", true, chans...)
		waitFor(t, 10*time.Second, "interest", func() bool { return metricValue(c.m.interestChannels) == 1 })
		prod := newProducer(t, brokers, parts, chans)

		prod.must(60)
		relay.waitCount(chans[0], 60)
		waitFor(t, 10*time.Second, "fetching to pause", func() bool { return metricValue(c.m.pausedPartitions) == 1 })
		if got := metricValue(c.m.backlog); got != 60 {
			t.Fatalf("unpersisted_backlog = %v, want 60", got)
		}
		prod.must(60)
		time.Sleep(300 * time.Millisecond)
		if got := metricValue(c.m.recordsConsumed); got != 60 {
			t.Fatalf("consumed %v records while paused, want 60", got)
		}
		if st.failed.Load() == 0 || metricValue(c.m.storeErrors) == 0 {
			t.Fatal("no failed store write counted")
		}

		st.down.Store(false)
		relay.waitCount(chans[0], 120)
		checkDense(t, chans[0], relay.get(chans[0]), 1, 0)
		storedAll(t, backing, chans, 120)
		waitCheckpoints(t, brokers, backing, parts)
		waitFor(t, 10*time.Second, "resume and drain", func() bool {
			return metricValue(c.m.pausedPartitions) == 0 && metricValue(c.m.backlog) == 0
		})
	})
}

// slowStore delays batch writes.
type slowStore struct {
	store.Store
	delay time.Duration
}

func (s *slowStore) WriteBatch(ctx context.Context, b store.Batch) error {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.WriteBatch(ctx, b)
}

// TestRevokeFlushesBeforeRelease: a controller that gives partitions up in a
// rebalance first persists their batches and checkpoint; only then does the
// new owner load them, so it replays nothing.
func TestRevokeFlushesBeforeRelease(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, ts testStore) {
		const parts = 4
		brokers := startKafka(t)
		st := ts.open(t)
		chans := channelNames(8)
		cfg := testConfig(brokers, parts, "a")
		cfg.BatchInterval, cfg.BatchMessages = time.Hour, 1<<20 // only a revocation or shutdown flushes
		a := startController(t, cfg, &slowStore{Store: st, delay: 200 * time.Millisecond})
		waitOwns(t, a.Server, parts)
		produce(t, brokers, parts, interleaved(chans, 0, 10))
		waitFor(t, 10*time.Second, "a to consume everything", func() bool {
			return metricValue(a.m.recordsConsumed) == float64(10*len(chans))
		})

		b := startController(t, testConfig(brokers, parts, "b"), st)
		waitFor(t, 30*time.Second, "the partitions to be split", func() bool {
			oa, ob := a.Ownership().Partitions, b.Ownership().Partitions
			return len(oa) > 0 && len(ob) > 0 && len(oa)+len(ob) == parts
		})
		moved := b.Ownership().Partitions
		for _, p := range moved {
			ps, err := st.LoadPartition(context.Background(), p)
			if err != nil || ps.NextOffset == 0 {
				t.Fatalf("partition %d handed over without its checkpoint (%d, %v)", p, ps.NextOffset, err)
			}
		}
		if got := metricValue(b.m.recordsConsumed); got != 0 {
			t.Fatalf("the new owner replayed %v records: the old owner let go before its checkpoint", got)
		}
		produce(t, brokers, parts, interleaved(chans, 10, 5))
		for _, ch := range chans {
			if slices.Contains(moved, partition.For(ch, parts)) {
				storedDense(t, st, ch, 15)
			}
		}
	})
}

// logRecorder keeps the records logged through it.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// matching returns the attributes of the records with message msg.
func (h *logRecorder) matching(msg string) []map[string]slog.Value {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]slog.Value
	for _, r := range h.recs {
		if r.Message != msg {
			continue
		}
		attrs := map[string]slog.Value{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
		out = append(out, attrs)
	}
	return out
}

// TestBadRecordLoggedOnce: a bad record is logged once, with its partition
// and offset, counted, and skipped; the controller keeps going.
func TestBadRecordLoggedOnce(t *testing.T) {
	brokers := startKafka(t)
	st := storeOf(t)
	rec := &logRecorder{}
	s, err := New(testConfig(brokers, 1, "c1"), st, slog.New(rec), nil, fastGroup()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitOwns(t, s, 1)

	good, _ := proto.Marshal(testMessage("chat:ok", 0))
	produceRaw(t, brokers, 1, func(i int) (string, []byte) {
		if i == 1 {
			return "chat:ok", []byte("\xff\xff not a message")
		}
		return "chat:ok", good
	}, 2)
	waitFor(t, 10*time.Second, "checkpoint past the bad record", func() bool {
		ps, err := st.LoadPartition(context.Background(), 0)
		return err == nil && ps.NextOffset == 2
	})
	logs := rec.matching("skipping bad record")
	if len(logs) != 1 {
		t.Fatalf("%d log records for one bad record, want 1", len(logs))
	}
	if logs[0]["offset"].Int64() != 1 || logs[0]["partition"].Int64() != 0 || logs[0]["reason"].String() != "undecodable value" {
		t.Fatalf("bad record log %v, want partition 0 offset 1 undecodable value", logs[0])
	}
	if got := metricValue(s.m.badRecords); got != 1 {
		t.Fatalf("bad_records_total = %v, want 1", got)
	}
	storedDense(t, st, "chat:ok", 1)
}

func storeOf(tb testing.TB) store.Store { return allStores[0].open(tb) }
