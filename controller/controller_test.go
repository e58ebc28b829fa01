package controller

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestStreamPersistRecover: a relay receives exactly the channels it asked
// for, dense seqs in Kafka order; the store holds every message once with
// dense seqs; Recover answers gaps from the ring and from the store.
func TestStreamPersistRecover(t *testing.T) {
	const parts, perChannel = 4, 60
	brokers, st, c := startSolo(t, parts)

	chans := channelNames(8)
	wanted := chans[:4]
	relay := openRelay(t, c.Addr(), "relay-1", true, wanted...)
	waitFor(t, 10*time.Second, "ownership on the relay stream", func() bool {
		o := relay.lastOwnership()
		return o != nil && len(o.Partitions) == parts && o.PartitionCount == parts && o.ControllerId == "c1"
	})

	// A channel's epoch is known before its first message and stays.
	before, err := dialController(t, c.Addr()).Recover(context.Background(), &heraldv1.RecoverRequest{Channel: wanted[0]})
	if err != nil || before.Epoch == "" || before.Offset != 0 {
		t.Fatalf("position of an empty channel: %+v, %v", before, err)
	}
	produce(t, brokers, parts, interleaved(chans, 0, perChannel))
	for _, ch := range wanted {
		relay.waitCount(ch, perChannel)
	}
	time.Sleep(100 * time.Millisecond) // anything unexpected would arrive now
	if got := relay.channels(); !slices.Equal(got, wanted) {
		t.Fatalf("relay got channels %v, want %v", got, wanted)
	}
	epochs := map[string]string{}
	for _, ch := range wanted {
		pubs := relay.get(ch)
		if len(pubs) != perChannel {
			t.Fatalf("%s: %d publications, want %d", ch, len(pubs), perChannel)
		}
		checkDense(t, ch, pubs, 1, 0)
		epochs[ch] = pubs[0].Epoch
	}
	if epochs[wanted[0]] != before.Epoch {
		t.Fatalf("epoch changed with the first message: %q before, %q after", before.Epoch, epochs[wanted[0]])
	}
	for _, ch := range chans {
		storedDense(t, st, ch, perChannel)
		sc, err := st.Channel(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		if sc.LastSeq != perChannel || (epochs[ch] != "" && sc.Epoch != epochs[ch]) {
			t.Fatalf("%s: stored head %+v, want seq %d epoch %s", ch, sc, perChannel, epochs[ch])
		}
	}
	if got := metricValue(c.m.deliveries); got != float64(len(wanted)*perChannel) {
		t.Errorf("deliveries_total = %v, want %d", got, len(wanted)*perChannel)
	}
	if got := metricValue(c.m.recordsConsumed); got != float64(len(chans)*perChannel) {
		t.Errorf("records_consumed_total = %v, want %d", got, len(chans)*perChannel)
	}
	waitFor(t, 5*time.Second, "backlog to drain", func() bool { return metricValue(c.m.backlog) == 0 })

	rc := dialController(t, c.Addr())
	ch := wanted[0]
	epoch := epochs[ch]
	tests := []struct {
		name      string
		req       *heraldv1.RecoverRequest
		recovered bool
		from, to  uint64 // expected publication seqs (0,0: none)
	}{
		{"position only", &heraldv1.RecoverRequest{Channel: ch}, true, 0, 0},
		{"up to date", &heraldv1.RecoverRequest{Channel: ch, Since: perChannel, Epoch: epoch, Limit: 10}, true, 0, 0},
		{"from ring", &heraldv1.RecoverRequest{Channel: ch, Since: perChannel - 10, Epoch: epoch, Limit: 100}, true, perChannel - 9, perChannel},
		{"from store and ring", &heraldv1.RecoverRequest{Channel: ch, Since: 5, Epoch: epoch, Limit: 100}, true, 6, perChannel},
		{"from the start without epoch", &heraldv1.RecoverRequest{Channel: ch, Since: 0, Limit: 1000}, true, 1, perChannel},
		{"exact limit", &heraldv1.RecoverRequest{Channel: ch, Since: perChannel - 30, Epoch: epoch, Limit: 30}, true, perChannel - 29, perChannel},
		{"gap above limit", &heraldv1.RecoverRequest{Channel: ch, Since: 5, Epoch: epoch, Limit: 10}, false, 0, 0},
		{"other epoch", &heraldv1.RecoverRequest{Channel: ch, Since: perChannel - 1, Epoch: "bogus", Limit: 10}, false, 0, 0},
		{"ahead of head", &heraldv1.RecoverRequest{Channel: ch, Since: perChannel + 5, Epoch: epoch, Limit: 10}, false, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rc.Recover(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Epoch != epoch || resp.Offset != perChannel {
				t.Fatalf("position = %s/%d, want %s/%d", resp.Epoch, resp.Offset, epoch, perChannel)
			}
			if resp.Recovered != tc.recovered {
				t.Fatalf("recovered = %v, want %v", resp.Recovered, tc.recovered)
			}
			if tc.from == 0 {
				if len(resp.Publications) != 0 {
					t.Fatalf("%d publications, want none", len(resp.Publications))
				}
				return
			}
			if n := int(tc.to - tc.from + 1); len(resp.Publications) != n {
				t.Fatalf("%d publications, want %d", len(resp.Publications), n)
			}
			checkDense(t, ch, resp.Publications, tc.from, int(tc.from)-1)
		})
	}
	t.Run("unknown channel", func(t *testing.T) {
		resp, err := rc.Recover(context.Background(), &heraldv1.RecoverRequest{Channel: "never-seen", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		// The epoch is known before the first message, so clients that
		// subscribe to an empty channel can recover with it later.
		if len(resp.Epoch) != 16 || resp.Offset != 0 || !resp.Recovered {
			t.Fatalf("got %+v, want offset 0 with the channel's epoch", resp)
		}
		for ch, e := range epochs {
			if resp.Epoch == e {
				t.Fatalf("never-seen and %s share epoch %q", ch, e)
			}
		}
	})
	t.Run("store lagging behind the ring", func(t *testing.T) {
		// A channel whose oldest seqs are neither in the ring nor in the
		// store cannot be recovered.
		ps := c.part(partition.For(ch, parts))
		ghost := "ghost"
		for i := 0; partition.For(ghost, parts) != ps.id; i++ {
			ghost = fmt.Sprintf("ghost-%d", i)
		}
		ps.mu.Lock()
		ps.chans[ghost] = &chanState{epoch: "e", seq: 100}
		for seq := uint64(91); seq <= 100; seq++ {
			ps.chans[ghost].push(&heraldv1.Publication{Channel: ghost, Seq: seq, Epoch: "e", Message: &heraldv1.Message{}}, 16)
		}
		ps.mu.Unlock()
		defer func() { ps.mu.Lock(); delete(ps.chans, ghost); ps.mu.Unlock() }()
		resp, err := rc.Recover(context.Background(), &heraldv1.RecoverRequest{Channel: ghost, Since: 80, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Recovered || len(resp.Publications) != 0 {
			t.Fatalf("got recovered=%v with %d publications, want not recovered", resp.Recovered, len(resp.Publications))
		}
		resp, err = rc.Recover(context.Background(), &heraldv1.RecoverRequest{Channel: ghost, Since: 90, Limit: 100})
		if err != nil || !resp.Recovered || len(resp.Publications) != 10 {
			t.Fatalf("from ring: %v %+v", err, resp)
		}
	})

	// Interest removal stops the stream of a channel.
	relay.interest(nil, []string{wanted[1]})
	waitFor(t, 5*time.Second, "interest removal", func() bool {
		return metricValue(c.m.interestChannels) == float64(len(wanted)-1)
	})
	produce(t, brokers, parts, interleaved(wanted, perChannel, 1))
	relay.waitCount(wanted[0], perChannel+1)
	time.Sleep(100 * time.Millisecond)
	if n := relay.count(wanted[1]); n != perChannel {
		t.Fatalf("removed channel still streamed: %d publications", n)
	}
}

// TestRestartContinuesDensely: a new controller on the same store and log
// continues every channel's seqs with no gap, no duplicate and the same
// epoch.
func TestRestartContinuesDensely(t *testing.T) {
	const parts = 3
	brokers := startKafka(t)
	st := memstore.New()
	chans := channelNames(6)

	c1 := startController(t, testConfig(brokers, parts, "c1"), st)
	waitOwns(t, c1.Server, parts)
	produce(t, brokers, parts, interleaved(chans, 0, 30))
	epochs := map[string]string{}
	for _, ch := range chans {
		storedDense(t, st, ch, 30)
		sc, err := st.Channel(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		epochs[ch] = sc.Epoch
	}
	c1.stop(t)

	// Produced while no controller runs.
	produce(t, brokers, parts, interleaved(chans, 30, 10))
	c2 := startController(t, testConfig(brokers, parts, "c2"), st)
	waitOwns(t, c2.Server, parts)
	relay := openRelay(t, c2.Addr(), "relay-1", true, chans...)
	waitFor(t, 10*time.Second, "ownership", func() bool { return relay.lastOwnership() != nil })
	for _, ch := range chans {
		storedDense(t, st, ch, 40)
	}
	produce(t, brokers, parts, interleaved(chans, 40, 10))
	for _, ch := range chans {
		relay.waitSeq(ch, 50)
		pubs := relay.get(ch)
		// The relay may also have caught the tail of the replayed backlog.
		first := pubs[0].Seq
		checkDense(t, ch, pubs, first, int(first)-1)
		if pubs[len(pubs)-1].Seq != 50 {
			t.Fatalf("%s: last seq %d, want 50", ch, pubs[len(pubs)-1].Seq)
		}
		if pubs[0].Epoch != epochs[ch] {
			t.Fatalf("%s: epoch changed across restart: %s -> %s", ch, epochs[ch], pubs[0].Epoch)
		}
		storedDense(t, st, ch, 50)
	}
}

// TestCrashReplay: a controller that dies without persisting (or after
// writing messages but not the checkpoint) is replaced by one that assigns
// exactly the same seqs and epochs.
func TestCrashReplay(t *testing.T) {
	const parts = 2
	chans := channelNames(4)

	t.Run("no flush", func(t *testing.T) {
		brokers := startKafka(t)
		st := memstore.New()
		cfg := testConfig(brokers, parts, "crashy")
		cfg.BatchInterval = time.Hour // nothing is persisted before the crash
		cfg.BatchMessages = 1 << 20
		c1 := startController(t, cfg, st, func(s *Server) { s.crashOnStop = true })
		waitOwns(t, c1.Server, parts)
		relay := openRelay(t, c1.Addr(), "relay-1", true, chans...)
		produce(t, brokers, parts, interleaved(chans, 0, 25))
		live := map[string][]*heraldv1.Publication{}
		for _, ch := range chans {
			relay.waitCount(ch, 25)
			live[ch] = relay.get(ch)
			checkDense(t, ch, live[ch], 1, 0)
		}
		c1.stop(t)
		if msgs, _ := st.Messages(context.Background(), store.Range{Channel: chans[0], From: 1}); len(msgs) != 0 {
			t.Fatalf("crash simulation persisted %d messages", len(msgs))
		}

		c2 := startController(t, testConfig(brokers, parts, "c2"), st)
		waitOwns(t, c2.Server, parts)
		produce(t, brokers, parts, interleaved(chans, 25, 5))
		for _, ch := range chans {
			msgs := storedDense(t, st, ch, 30)
			sc, _ := st.Channel(context.Background(), ch)
			if sc.Epoch != live[ch][0].Epoch {
				t.Fatalf("%s: epoch after replay %s, live before crash %s", ch, sc.Epoch, live[ch][0].Epoch)
			}
			for i, p := range live[ch] {
				if msgs[i].ID != p.Message.Id || msgs[i].Seq != p.Seq {
					t.Fatalf("%s: replay gave %s seq %d, live had %s seq %d", ch, msgs[i].ID, msgs[i].Seq, p.Message.Id, p.Seq)
				}
			}
		}
	})

	t.Run("messages ahead of checkpoint", func(t *testing.T) {
		brokers := startKafka(t)
		st := memstore.New()
		c1 := startController(t, testConfig(brokers, parts, "torn"), &tornStore{Store: st}, func(s *Server) { s.crashOnStop = true })
		waitOwns(t, c1.Server, parts)
		produce(t, brokers, parts, interleaved(chans, 0, 20))
		for _, ch := range chans {
			storedDense(t, st, ch, 20) // messages and heads, no checkpoint
		}
		c1.stop(t)
		for p := int32(0); p < parts; p++ {
			ps, err := st.LoadPartition(context.Background(), p)
			if err != nil || ps.NextOffset != 0 {
				t.Fatalf("partition %d checkpoint %d (%v), want none", p, ps.NextOffset, err)
			}
		}
		epochs := map[string]string{}
		for _, ch := range chans {
			sc, _ := st.Channel(context.Background(), ch)
			epochs[ch] = sc.Epoch
		}

		c2 := startController(t, testConfig(brokers, parts, "c2"), st)
		waitOwns(t, c2.Server, parts)
		relay := openRelay(t, c2.Addr(), "relay-1", true, chans...)
		waitFor(t, 10*time.Second, "ownership", func() bool { return relay.lastOwnership() != nil })
		produce(t, brokers, parts, interleaved(chans, 20, 10))
		for _, ch := range chans {
			relay.waitSeq(ch, 30)
			pubs := relay.get(ch)
			checkDense(t, ch, pubs, pubs[0].Seq, int(pubs[0].Seq)-1)
			if last := pubs[len(pubs)-1]; last.Seq != 30 || last.Epoch != epochs[ch] {
				t.Fatalf("%s: last publication seq %d epoch %s, want 30 %s", ch, last.Seq, last.Epoch, epochs[ch])
			}
			storedDense(t, st, ch, 30)
		}
		waitFor(t, 10*time.Second, "checkpoints", func() bool {
			var total int64
			for p := int32(0); p < parts; p++ {
				ps, _ := st.LoadPartition(context.Background(), p)
				total += ps.NextOffset
			}
			return total == int64(len(chans)*30)
		})
	})
}

// tornStore writes messages and heads but never the checkpoint, as a crash
// between the two steps of every batch would.
type tornStore struct{ *memstore.Store }

func (s *tornStore) WriteBatch(ctx context.Context, b store.Batch) error {
	return s.WriteMessagesAndHeadsOnly(ctx, b)
}

// TestTwoControllers: two controllers in one group split the partitions,
// announce it, refuse Recover for partitions they do not own, and one takes
// over the other's partitions when it leaves, keeping seqs dense.
func TestTwoControllers(t *testing.T) {
	const parts = 6
	brokers := startKafka(t)
	st := memstore.New()
	chans := channelNames(12)

	a := startController(t, testConfig(brokers, parts, "a"), st)
	waitOwns(t, a.Server, parts)
	b := startController(t, testConfig(brokers, parts, "b"), st)
	ra := openRelay(t, a.Addr(), "relay-1", true, chans...)
	rb := openRelay(t, b.Addr(), "relay-1", true, chans...)

	split := func() bool {
		oa, ob := ra.lastOwnership(), rb.lastOwnership()
		if oa == nil || ob == nil || len(oa.Partitions) == 0 || len(ob.Partitions) == 0 {
			return false
		}
		all := append(slices.Clone(oa.Partitions), ob.Partitions...)
		slices.Sort(all)
		return len(all) == parts && len(slices.Compact(all)) == parts
	}
	waitFor(t, 30*time.Second, "the partitions to be split between a and b", split)

	produce(t, brokers, parts, interleaved(chans, 0, 20))
	for _, ch := range chans {
		waitFor(t, 20*time.Second, "publications of "+ch, func() bool { return ra.count(ch)+rb.count(ch) >= 20 })
		pubs := append(ra.get(ch), rb.get(ch)...)
		checkDense(t, ch, pubs, 1, 0)
	}

	// Recover goes to the owner only.
	ob := rb.lastOwnership()
	var foreign string
	for _, ch := range chans {
		if slices.Contains(ob.Partitions, partition.For(ch, parts)) {
			foreign = ch
			break
		}
	}
	if foreign == "" {
		t.Fatal("b owns no test channel")
	}
	_, err := dialController(t, a.Addr()).Recover(context.Background(), &heraldv1.RecoverRequest{Channel: foreign, Limit: 10})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Recover on non-owner: %v, want FailedPrecondition", err)
	}
	resp, err := dialController(t, b.Addr()).Recover(context.Background(), &heraldv1.RecoverRequest{Channel: foreign, Limit: 100})
	if err != nil || !resp.Recovered || resp.Offset != 20 || len(resp.Publications) != 20 {
		t.Fatalf("Recover on owner: %v %v", err, resp)
	}

	// Positions answers what Recover with limit 0 answers, for the owned
	// channels, and flags the others.
	ask := append(slices.Clone(chans), "", "chat:never-published")
	for _, c := range []*runningController{a, b} {
		own := c.Ownership().Partitions
		cl := dialController(t, c.Addr())
		resp, err := cl.Positions(context.Background(), &heraldv1.PositionsRequest{Channels: ask})
		if err != nil || len(resp.Positions) != len(ask) {
			t.Fatalf("Positions on %s: %v, %v", c.cfg.ID, resp, err)
		}
		for i, ch := range ask {
			pos := resp.Positions[i]
			if want := ch != "" && slices.Contains(own, partition.For(ch, parts)); pos.Owned != want {
				t.Fatalf("Positions on %s: %q owned=%v, want %v", c.cfg.ID, ch, pos.Owned, want)
			}
			if !pos.Owned {
				continue
			}
			rec, err := cl.Recover(context.Background(), &heraldv1.RecoverRequest{Channel: ch})
			if err != nil || pos.Epoch != rec.Epoch || pos.Offset != rec.Offset || pos.Epoch == "" {
				t.Fatalf("Positions on %s: %q at %q/%d, Recover says %v, %v", c.cfg.ID, ch, pos.Epoch, pos.Offset, rec, err)
			}
			if want := uint64(20); slices.Contains(chans, ch) && pos.Offset != want {
				t.Fatalf("Positions on %s: %q offset %d, want %d", c.cfg.ID, ch, pos.Offset, want)
			}
		}
	}
	tooMany := make([]string, maxPositions+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("chat:%d", i)
	}
	if _, err := dialController(t, a.Addr()).Positions(context.Background(), &heraldv1.PositionsRequest{Channels: tooMany}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Positions with %d channels: %v, want InvalidArgument", len(tooMany), err)
	}

	// b leaves: a takes everything over and continues densely.
	b.stop(t)
	waitFor(t, 30*time.Second, "a to own every partition", func() bool {
		o := ra.lastOwnership()
		return o != nil && len(o.Partitions) == parts
	})
	produce(t, brokers, parts, interleaved(chans, 20, 5))
	for _, ch := range chans {
		storedDense(t, st, ch, 25)
	}
	for _, ch := range chans {
		if slices.Contains(ob.Partitions, partition.For(ch, parts)) {
			ra.waitSeq(ch, 25)
			pubs := ra.get(ch)
			checkDense(t, ch, pubs, pubs[0].Seq, int(pubs[0].Seq)-1)
			if last := pubs[len(pubs)-1].Seq; last != 25 {
				t.Fatalf("%s: last seq on a after takeover %d, want 25", ch, last)
			}
		}
	}
}

// TestBadRecords: undecodable values, empty channels and misrouted channels
// are skipped and counted, and the checkpoint still moves past them.
func TestBadRecords(t *testing.T) {
	const parts = 1
	brokers, st, c := startSolo(t, parts)

	good := testMessage("chat:ok", 0)
	empty := testMessage("", 0)
	recs := []func() (string, []byte){
		func() (string, []byte) { return "chat:ok", []byte{0xff, 0xff, 0xff} },
		func() (string, []byte) { b, _ := marshal(empty); return "x", b },
		func() (string, []byte) { b, _ := marshal(good); return "chat:ok", b },
	}
	produceRaw(t, brokers, parts, func(i int) (string, []byte) { return recs[i]() }, len(recs))
	storedDense(t, st, "chat:ok", 1)
	waitFor(t, 10*time.Second, "checkpoint past every record", func() bool {
		ps, err := st.LoadPartition(context.Background(), 0)
		return err == nil && ps.NextOffset == 3
	})
	if got := metricValue(c.m.badRecords); got != 2 {
		t.Fatalf("bad_records_total = %v, want 2", got)
	}
	// Bad records after the last good one still move the checkpoint.
	produceRaw(t, brokers, parts, func(int) (string, []byte) { return "k", []byte("not proto \xff") }, 1)
	waitFor(t, 10*time.Second, "checkpoint past trailing bad record", func() bool {
		ps, err := st.LoadPartition(context.Background(), 0)
		return err == nil && ps.NextOffset == 4
	})
}

// TestMisroutedRecord: a message produced to another partition than its
// channel's is skipped (sequencing it would give the channel two seq
// authorities).
func TestMisroutedRecord(t *testing.T) {
	const parts = 2
	brokers, st, c := startSolo(t, parts)
	if err := c.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	ch := "chat:misrouted"
	key := "k"
	for i := 0; partition.For(key, parts) == partition.For(ch, parts); i++ {
		key = fmt.Sprintf("k%d", i)
	}
	b, _ := marshal(testMessage(ch, 0))
	produceRaw(t, brokers, parts, func(int) (string, []byte) { return key, b }, 1)
	waitFor(t, 10*time.Second, "checkpoint past the misrouted record", func() bool {
		ps, err := st.LoadPartition(context.Background(), partition.For(key, parts))
		return err == nil && ps.NextOffset == 1
	})
	if got := metricValue(c.m.badRecords); got != 1 {
		t.Fatalf("bad_records_total = %v, want 1", got)
	}
	if _, err := st.Channel(context.Background(), ch); !store.IsNotFound(err) {
		t.Fatalf("misrouted channel stored: %v", err)
	}
}
