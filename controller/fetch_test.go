package controller

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
)

// TestFetchFollowsLeaderMoves: partitions spread over three brokers, their
// leaders moved again and again while records are produced. The fetch
// loops must follow every move (a loop that kept asking the old leader
// would stall its partitions) and sequence every record once, densely, in
// Kafka order.
func TestFetchFollowsLeaderMoves(t *testing.T) {
	const parts = 6
	c := startCluster(t, 3)
	brokers := c.ListenAddrs()
	st := memstore.New()
	ctrl := startController(t, testConfig(brokers, parts, "c1"), st)
	waitOwns(t, ctrl.Server, parts)
	chans := channelNames(12)
	relay := openRelay(t, ctrl.Addr(), "relay-1", true, chans...)
	waitFor(t, 10*time.Second, "ownership", func() bool { return relay.lastOwnership() != nil })

	leaders := map[int32]bool{}
	for p := range int32(parts) {
		leaders[c.LeaderFor(testTopic, p)] = true
	}
	if len(leaders) < 2 {
		t.Fatalf("kfake put every partition on one broker (%v): the test needs several leaders", leaders)
	}

	const rounds = 8
	for r := range rounds {
		produce(t, brokers, parts, interleaved(chans, r*5, 5))
		for p := range int32(parts) {
			next := (c.LeaderFor(testTopic, p) + 1) % 3
			if err := c.MoveTopicPartition(testTopic, p, next); err != nil {
				t.Fatalf("moving partition %d to broker %d: %v", p, next, err)
			}
		}
	}
	for _, ch := range chans {
		storedDense(t, st, ch, rounds*5)
		relay.waitSeq(ch, rounds*5)
		checkDense(t, ch, relay.get(ch), 1, 0)
	}
	if n := metricValue(ctrl.m.fetches); n == 0 {
		t.Fatalf("fetches_total is %v", n)
	}
}

// TestFetchSkipsDeletedRecords: records deleted from the log before the
// controller sequenced them (retention) leave its checkpoint below the log's
// start. The fetch gets OFFSET_OUT_OF_RANGE; the controller moves to the
// log's start, sequences what is there from the channel's head on, and keeps
// consuming.
func TestFetchSkipsDeletedRecords(t *testing.T) {
	const parts = 1
	c := startCluster(t, 1)
	brokers := c.ListenAddrs()
	var err error
	if err = EnsureTopic(context.Background(), brokers, testTopic, parts); err != nil {
		t.Fatal(err)
	}
	const ch = "chat:retained"
	if partition.For(ch, parts) != 0 {
		t.Fatal("one partition: every channel is on 0")
	}
	produce(t, brokers, parts, interleaved([]string{ch}, 0, 10))
	if err := c.DeleteRecords(testTopic, 0, 4); err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}

	st := memstore.New()
	ctrl := startController(t, testConfig(brokers, parts, "c1"), st)
	waitOwns(t, ctrl.Server, parts)
	produce(t, brokers, parts, interleaved([]string{ch}, 10, 5))

	// Offsets 4..14 are left: messages 4..14 become seqs 1..11.
	var msgs []store.Message
	waitFor(t, 20*time.Second, "11 stored messages", func() bool {
		msgs, err = st.Messages(context.Background(), store.Range{Channel: ch, From: 1, To: 1 << 40})
		return err == nil && len(msgs) >= 11
	})
	if len(msgs) != 11 {
		t.Fatalf("%d stored messages, want 11", len(msgs))
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("%s-%05d", ch, i+4); m.Seq != uint64(i+1) || m.ID != want || m.Offset != int64(i+4) {
			t.Fatalf("stored %d: seq %d id %s offset %d, want seq %d id %s offset %d", i, m.Seq, m.ID, m.Offset, i+1, want, i+4)
		}
	}
	if n := metricValue(ctrl.m.fetchErrors); n == 0 {
		t.Fatal("the out-of-range fetch was not counted in fetch_errors_total")
	}
}

// TestFetchPacedWhileBusy: records produced one request at a time, every
// ~2 ms, alternately by two producers (as two relays would), while the
// controller's fetch window is 100 ms. Each fetch comes back at once with
// records, so the loop sends the next a window after the previous: over the
// busy spell at most one fetch per window reaches the leader (without the
// pacing it would be one per produce request), and every record is still
// sequenced once, densely. With one producer (one relay) the same spell is
// not paced: a fetch per produce request, as without a window.
func TestFetchPacedWhileBusy(t *testing.T) {
	const window = 100 * time.Millisecond
	t.Run("two producers", func(t *testing.T) {
		const n = 400
		during, paced, busy := fetchesWhileBusy(t, window, 2, n)
		if paced == 0 {
			t.Fatal("fetches_paced_total is 0 with two producers")
		}
		// Fetches at least two thirds of a window apart over the busy spell
		// (fetchPace skips shorter pauses), one more for the long poll
		// waiting when it began, one for the first records (the second
		// producer not seen yet).
		if limit := int(busy*3/(2*window)) + 3; during > limit {
			t.Fatalf("%d fetches reached the leader during %v of produce requests every ~2 ms; paced by a %v window there would be at most %d", during, busy.Round(time.Millisecond), window, limit)
		}
	})
	t.Run("one producer", func(t *testing.T) {
		const n = 200
		during, paced, busy := fetchesWhileBusy(t, window, 1, n)
		if paced != 0 {
			t.Fatalf("fetches_paced_total is %v with one producer, want 0", paced)
		}
		// Unpaced, nearly every produce request is fetched on its own
		// (ProduceSync waits for each); paced, there would be ~busy/window.
		if during < n/2 {
			t.Fatalf("%d fetches for %d produce requests over %v from one producer: paced, but one relay must never wait for the window", during, n, busy.Round(time.Millisecond))
		}
	})
}

// fetchesWhileBusy starts a controller with the given fetch window and
// produces n records to one channel, one request ~2 ms after the other,
// round robin over the given number of producers; it checks that all are
// sequenced densely and returns how many fetches reached the leader while
// it produced, how many the window held back (fetches_paced_total) and
// for how long it produced.
func fetchesWhileBusy(t *testing.T, window time.Duration, producers, n int) (during int, paced float64, busy time.Duration) {
	t.Helper()
	const parts = 1
	c := startCluster(t, 1)
	brokers := c.ListenAddrs()
	var (
		mu      sync.Mutex
		counted = map[kmsg.Request]bool{}
	)
	c.ControlKey(kmsg.Fetch.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		counted[req] = true // a fetch waiting for records is seen again when they come
		mu.Unlock()
		return nil, nil, false
	})
	fetches := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(counted)
	}

	st := memstore.New()
	cfg := testConfig(brokers, parts, "c1")
	cfg.FetchWindow = window
	ctrl := startController(t, cfg, st)
	waitOwns(t, ctrl.Server, parts)
	const ch = "chat:busy"
	relay := openRelay(t, ctrl.Addr(), "relay-1", true, ch)
	waitFor(t, 10*time.Second, "ownership", func() bool { return relay.lastOwnership() != nil })

	var cls []*kgo.Client
	for range producers {
		// Idempotent (franz-go's default): each client has its own producer ID.
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(testTopic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		cls = append(cls, cl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, start := fetches(), time.Now()
	for i := range n {
		b, err := marshal(testMessage(ch, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := cls[i%producers].ProduceSync(ctx, &kgo.Record{Key: []byte(ch), Value: b}).FirstErr(); err != nil {
			t.Fatalf("producing: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	busy, during = time.Since(start), fetches()-before
	relay.waitSeq(ch, uint64(n))
	checkDense(t, ch, relay.get(ch), 1, 0)
	storedDense(t, st, ch, n)
	paced = metricValue(ctrl.m.fetchesPaced)
	t.Logf("%d produce requests from %d producers in %v, %d fetches, %v paced", n, producers, busy.Round(time.Millisecond), during, paced)
	return during, paced, busy
}

// TestProducerMix: a fetch loop counts several producers from the first
// change of producer ID until severalProducersHold after the last one.
func TestProducerMix(t *testing.T) {
	t0 := time.Unix(1000, 0)
	recs := func(ids ...int64) []*kgo.Record {
		var out []*kgo.Record
		for _, id := range ids {
			out = append(out, &kgo.Record{ProducerID: id})
		}
		return out
	}
	var m producerMix
	m.see(recs(7, 7, 7), t0)
	if m.several(t0) {
		t.Fatal("one producer counted as several")
	}
	m.see(recs(7), t0.Add(time.Second))
	if m.several(t0.Add(time.Second)) {
		t.Fatal("one producer, seen again later, counted as several")
	}
	t1 := t0.Add(2 * time.Second)
	m.see(recs(7, 9), t1)
	if !m.several(t1) || !m.several(t1.Add(severalProducersHold-time.Millisecond)) {
		t.Fatal("a second producer not counted")
	}
	m.see(recs(9, 9), t1.Add(severalProducersHold/2))
	if m.several(t1.Add(severalProducersHold)) {
		t.Fatal("still several a hold after the last change of producer")
	}
	m.see(recs(-1), t1.Add(2*severalProducersHold))
	if !m.several(t1.Add(2 * severalProducersHold)) {
		t.Fatal("records without a producer ID after producer 9: a change, not counted")
	}
}

// TestFetchPace: the pacing decision alone. Only a fetch that came back
// with records well before a window after it was sent delays the next.
func TestFetchPace(t *testing.T) {
	const w = 3 * time.Millisecond
	sent := time.Unix(1000, 0)
	for _, tc := range []struct {
		name    string
		window  time.Duration
		after   time.Duration // answered this long after sent
		records int
		want    time.Duration
	}{
		{"answered at once with records: the rest of the window", w, time.Millisecond, 5, 2 * time.Millisecond},
		{"answered at 2 ms: a pause under a third of the window is not taken", w, 2*time.Millisecond + time.Microsecond, 5, 0},
		{"empty response (long poll timed out)", w, 500 * time.Millisecond, 0, 0},
		{"empty at once", w, 0, 0, 0},
		{"records after a quiet spell (long poll answered late)", w, 200 * time.Millisecond, 1, 0},
		{"answered exactly a window after", w, w, 3, 0},
		{"window off", -1, time.Millisecond, 5, 0},
	} {
		if got := fetchPace(tc.window, sent, sent.Add(tc.after), tc.records); got != tc.want {
			t.Errorf("%s: pause %v, want %v", tc.name, got, tc.want)
		}
	}
}
