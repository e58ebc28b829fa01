package controller

import (
	"context"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// An idle channel's ring is dropped (head kept, Recover served from the
// store), a busy one keeps it, and the next publication continues densely.
func TestIdleRingsEvicted(t *testing.T) {
	const parts, perChannel = 2, 20
	brokers, _, c := startSolo(t, parts)
	chans := channelNames(2)
	idle, busy := chans[0], chans[1]
	produce(t, brokers, parts, interleaved(chans, 0, perChannel))
	waitFor(t, 10*time.Second, "both channels consumed and persisted", func() bool {
		return metricValue(c.m.recordsConsumed) == 2*perChannel && metricValue(c.m.backlog) == 0
	})
	ringLen := func(ch string) int {
		ps := c.part(partition.For(ch, parts))
		ps.mu.RLock()
		defer ps.mu.RUnlock()
		return len(ps.chans[ch].ring)
	}
	ringed := func() int { // channels the janitor walks
		n := 0
		for _, p := range c.ownedParts() {
			ps := c.part(p)
			ps.mu.RLock()
			n += len(ps.ringed)
			ps.mu.RUnlock()
		}
		return n
	}
	if n := ringed(); n != 2 {
		t.Fatalf("%d channels listed with a ring, want 2", n)
	}
	// Make busy recent and idle old, as if idle had seen nothing for RingIdle.
	ps := c.part(partition.For(idle, parts))
	ps.mu.Lock()
	ps.chans[idle].last = time.Now().Add(-time.Hour).UnixNano()
	ps.mu.Unlock()
	if n := c.evictIdleRings(time.Now(), 10*time.Minute); n != 1 {
		t.Fatalf("evicted %d rings, want 1 (the idle channel's)", n)
	}
	if want := min(perChannel, c.cfg.RingSize); ringLen(idle) != 0 || ringLen(busy) != want {
		t.Fatalf("rings after eviction: idle %d, busy %d; want 0 and %d", ringLen(idle), ringLen(busy), want)
	}
	if n := ringed(); n != 1 {
		t.Fatalf("%d channels listed with a ring after eviction, want 1", n)
	}

	rc := dialController(t, c.Addr())
	resp, err := rc.Recover(context.Background(), &heraldv1.RecoverRequest{Channel: idle, Since: 3, Limit: 100})
	if err != nil || !resp.Recovered || resp.Offset != perChannel || len(resp.Publications) != perChannel-3 {
		t.Fatalf("Recover of the evicted channel: %+v, %v; want seqs 4..%d from the store", resp, err, perChannel)
	}
	checkDense(t, idle, resp.Publications, 4, 3)

	// The head survived: the next publication gets the next seq.
	produce(t, brokers, parts, []*heraldv1.Message{testMessage(idle, perChannel)})
	waitFor(t, 10*time.Second, "the next publication", func() bool { return ringLen(idle) == 1 })
	if n := ringed(); n != 2 {
		t.Fatalf("%d channels listed with a ring after the next publication, want 2", n)
	}
	resp, err = rc.Recover(context.Background(), &heraldv1.RecoverRequest{Channel: idle, Since: perChannel - 1, Limit: 10})
	if err != nil || !resp.Recovered || resp.Offset != perChannel+1 || len(resp.Publications) != 2 {
		t.Fatalf("Recover after the next publication: %+v, %v; want seqs %d..%d", resp, err, perChannel, perChannel+1)
	}
	checkDense(t, idle, resp.Publications, perChannel, perChannel-1)
}
