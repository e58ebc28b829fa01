package controller

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
)

func writerTestServer(t *testing.T, st store.Store) *Server {
	t.Helper()
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(nil, 1, "wake")
	cfg.BatchMessages, cfg.BatchInterval, cfg.MaxBacklog = 10, time.Hour, 1000
	s := &Server{cfg: cfg, store: st, log: testLogger(t), m: m}
	s.sw = newStoreWriter(s)
	return s
}

func woken(sw *storeWriter) bool {
	select {
	case <-sw.wake:
		return true
	default:
		return false
	}
}

// The fetch loop must not wake the store writer on every fetch: only when
// the partition had nothing pending and the writer sleeps past its flush
// instant (or without a timer), or when the batch became full.
func TestBatchWriterWakesOnlyWhenDue(t *testing.T) {
	s := writerTestServer(t, nil)
	sw := s.sw
	w := newBatchWriter(s, sw, 0)
	msgs := func(n int) chunk { return chunk{msgs: make([]store.Message, n), at: time.Now()} }

	w.add(msgs(1))
	if !woken(sw) {
		t.Fatal("first chunk: store writer not woken (it sleeps without a timer while nothing is pending)")
	}
	for i := range 3 {
		w.add(msgs(2))
		if woken(sw) {
			t.Fatalf("chunk %d below BatchMessages woke the writer", i+2)
		}
	}
	w.add(msgs(3)) // 1+6+3 = 10 = BatchMessages
	if !woken(sw) {
		t.Fatal("batch became full: writer not woken")
	}
	w.add(msgs(1))
	if woken(sw) {
		t.Fatal("already full: woken again")
	}

	round, _ := sw.collect(time.Now())
	if len(round) != 1 || len(round[0].chunks) != 5 || round[0].msgs != 10 {
		t.Fatalf("collect: %+v; want the 5 chunks making the full batch now", round)
	}
	round, next := sw.collect(time.Now())
	if round != nil || next <= 0 {
		t.Fatalf("collect of a young 1-message remainder: %d batches, next %v; want a wait", len(round), next)
	}
	if w.queued != 1 {
		t.Fatalf("queued %d after the full batch was taken, want 1", w.queued)
	}

	// A second partition's first chunk falls due at the same shared
	// instant the writer now sleeps to: no wake-up.
	w2 := newBatchWriter(s, sw, 1)
	w2.add(msgs(1))
	if woken(sw) {
		t.Fatal("a first chunk due at the instant the writer already sleeps to woke it")
	}
	// Sleeping past it (a partition backing off), the same add wakes it.
	sw.mu.Lock()
	sw.sleepUntil = time.Now().Add(10 * time.Hour)
	sw.mu.Unlock()
	w3 := newBatchWriter(s, sw, 2)
	w3.add(msgs(1))
	if !woken(sw) {
		t.Fatal("a first chunk due before the writer's next look did not wake it")
	}
}

// partFailStore fails the batches of one partition until told otherwise and
// records what reached it.
type partFailStore struct {
	store.Store
	mu      sync.Mutex
	failing map[int32]bool
	calls   int
	sizes   []int // batches per call
}

func (f *partFailStore) WriteBatches(ctx context.Context, bs []store.Batch) []error {
	f.mu.Lock()
	f.calls++
	f.sizes = append(f.sizes, len(bs))
	errs := make([]error, len(bs))
	var ok []store.Batch
	var idx []int
	for i, b := range bs {
		if f.failing[b.Partition] {
			errs[i] = errors.New("injected failure")
		} else {
			ok, idx = append(ok, b), append(idx, i)
		}
	}
	f.mu.Unlock()
	for j, b := range ok {
		errs[idx[j]] = f.Store.WriteBatch(ctx, b)
	}
	return errs
}

func (f *partFailStore) fail(p int32, on bool) {
	f.mu.Lock()
	f.failing[p] = on
	f.mu.Unlock()
}

// One store call per flush for all partitions; a partition whose batch
// fails is retried after its backoff, in order, while the others go on.
func TestStoreWriterOneCallPerFlushAndRetriesAlone(t *testing.T) {
	st := &partFailStore{Store: memstore.New(), failing: map[int32]bool{}}
	s := writerTestServer(t, st)
	s.cfg.BatchInterval = 20 * time.Millisecond
	sw := s.sw
	go sw.run()
	defer sw.stop()
	ws := make([]*batchWriter, 3)
	for p := range ws {
		ws[p] = newBatchWriter(s, sw, int32(p))
	}
	st.fail(1, true)
	ctx := context.Background()
	at := time.Now()
	for p, w := range ws {
		for i := range 3 {
			off := int64(i)
			w.add(chunk{msgs: []store.Message{{Channel: "c" + string(rune('a'+p)), Seq: uint64(i + 1), Partition: int32(p), Offset: off}},
				heads: []store.Head{{Channel: "c" + string(rune('a'+p)), Partition: int32(p), LastSeq: uint64(i + 1), Offset: off}},
				next:  off + 1, at: at})
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for ws[0].unpersisted()+ws[2].unpersisted() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("healthy partitions not persisted: %d, %d left", ws[0].unpersisted(), ws[2].unpersisted())
		}
		time.Sleep(5 * time.Millisecond)
	}
	st.mu.Lock()
	sizes := append([]int(nil), st.sizes...)
	st.mu.Unlock()
	if len(sizes) == 0 || sizes[0] != 3 {
		t.Fatalf("batches per WriteBatches call %v; want the first flush to carry all 3 partitions in one call", sizes)
	}
	if got := ws[1].unpersisted(); got != 3 {
		t.Fatalf("failing partition: %d unpersisted, want 3", got)
	}
	for _, p := range []int32{0, 2} {
		if ps, err := st.LoadPartition(ctx, p); err != nil || ps.NextOffset != 3 {
			t.Fatalf("partition %d checkpoint %d (%v), want 3", p, ps.NextOffset, err)
		}
	}
	st.fail(1, false)
	for ws[1].unpersisted() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("failed partition not retried after the store recovered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ps, err := st.LoadPartition(ctx, 1)
	if err != nil || ps.NextOffset != 3 || ps.Heads["cb"].LastSeq != 3 {
		t.Fatalf("partition 1 after retry: %+v (%v); want checkpoint 3, head seq 3", ps, err)
	}
	msgs, err := st.Messages(ctx, store.Range{Channel: "cb"})
	if err != nil || len(msgs) != 3 {
		t.Fatalf("partition 1 messages after retry: %d (%v), want 3", len(msgs), err)
	}
	// A draining close returns once its partition is written.
	ws[0].add(chunk{msgs: []store.Message{{Channel: "ca", Seq: 4, Partition: 0, Offset: 3}}, next: 4, at: time.Now()})
	ws[0].close(5*time.Second, true)
	if ps, err := st.LoadPartition(ctx, 0); err != nil || ps.NextOffset != 4 {
		t.Fatalf("partition 0 after a draining close: checkpoint %d (%v), want 4", ps.NextOffset, err)
	}
}
