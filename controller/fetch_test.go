package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

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
