package relay

import (
	"fmt"
	"sync"
	"testing"
	"time"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// TestPositionsBatched: a burst of connections with a channel of their own
// each (the token's server-side channels, a connect storm of personal
// channels) is positioned with a few Positions calls instead of a Recover
// per channel, and every client is told its channel's true epoch and
// offset and gets the next publication. A controller without Positions (an
// older one) is asked with Recover per channel instead.
func TestPositionsBatched(t *testing.T) {
	const n = 120
	for _, tc := range []struct {
		name        string
		noPositions bool
	}{{"Positions", false}, {"controller without Positions", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, nil)
			e.fc.noPositions.Store(tc.noPositions)
			e.fc.mu.Lock()
			e.fc.positionsDelay = 20 * time.Millisecond // new channels queue up meanwhile
			for i := range n {
				ch := fmt.Sprintf("me:%d", i)
				c := e.fc.chanLocked(ch)
				for seq := 1; seq <= i%5; seq++ {
					c.pubs = append(c.pubs, &heraldv1.Publication{Channel: ch, Seq: uint64(seq), Epoch: c.epoch, Message: &heraldv1.Message{Data: []byte(`1`)}})
				}
			}
			e.fc.mu.Unlock()

			conns := make([]*wsConn, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					ch := fmt.Sprintf("me:%d", i)
					w, r := connectRaw(t, e.srv.Addr(), token(t, fmt.Sprintf("u%d", i), []string{ch}, nil, 0))
					sub := r.Connect.Subs[ch]
					if sub == nil || sub.Epoch != "ep-"+ch || sub.Offset != uint64(i%5) {
						t.Errorf("%s: subscribed at %+v, want epoch %q offset %d", ch, sub, "ep-"+ch, i%5)
					}
					conns[i] = w
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			calls, recovers := e.fc.positionsCalls.Load(), e.fc.positionRecovers.Load()
			t.Logf("%d channels: %d Positions calls, %d Recover calls for a position", n, calls, recovers)
			if tc.noPositions {
				if calls != 0 || recovers != n {
					t.Fatalf("%d Positions calls and %d position Recovers, want 0 and one per channel (%d)", calls, recovers, n)
				}
			} else if recovers != 0 || calls == 0 || calls > n/4 {
				t.Fatalf("%d Positions calls and %d position Recovers for %d new channels, want a few calls (at most %d) and no Recover", calls, recovers, n, n/4)
			}
			for i, w := range conns {
				ch := fmt.Sprintf("me:%d", i)
				seq := uint64(i%5 + 1)
				e.fc.broadcast(&heraldv1.Publication{Channel: ch, Seq: seq, Epoch: "ep-" + ch, Message: &heraldv1.Message{Sender: "s", Data: []byte(`{"n":1}`)}})
				if rep := decodeReply(t, w.readText()); rep.Push == nil || rep.Push.Pub == nil || rep.Push.Channel != ch || rep.Push.Pub.Offset != seq {
					t.Fatalf("%s: got %+v, want push %d", ch, rep, seq)
				}
			}
			if !tc.noPositions {
				return
			}
			// The controller is upgraded: once its stream reopens, new
			// channels are positioned with Positions again.
			e.fc.stop()
			waitUntil(t, "stream down", func() bool { return e.srv.links.up() == 1 }) // the non-owner stays
			e.fc.noPositions.Store(false)
			e.fc.start(t)
			waitUntil(t, "stream up again", func() bool { return e.srv.links.up() == 2 })
			waitUntil(t, "ownership known again", func() bool {
				e.srv.links.mu.RLock()
				defer e.srv.links.mu.RUnlock()
				return len(e.srv.links.owners) == 4
			})
			before := e.fc.positionRecovers.Load()
			if _, r := connectRaw(t, e.srv.Addr(), token(t, "late", []string{"me:late"}, nil, 0)); r.Connect.Subs["me:late"] == nil {
				t.Fatalf("late connect: %+v", r.Connect)
			}
			if calls, recovers := e.fc.positionsCalls.Load(), e.fc.positionRecovers.Load()-before; calls != 1 || recovers != 0 {
				t.Fatalf("after the upgrade: %d Positions calls and %d position Recovers for a new channel, want 1 and 0", calls, recovers)
			}
		})
	}
}

// TestPositionsControllerAway: new channels subscribed while their
// controller is away fail together once one of them could not be
// positioned (seconds of retries), not one after another: every subscriber
// gets its error within one retry cycle, then resubscribes.
func TestPositionsControllerAway(t *testing.T) {
	const n = 8
	e := startEnv(t, nil)
	e.fc.stop()
	waitUntil(t, "stream down", func() bool { return e.srv.links.up() == 1 }) // the non-owner stays
	w, _ := connectRaw(t, e.srv.Addr(), token(t, "away", nil, pubAll, 0))
	var frame []byte
	for i := range n {
		if i > 0 {
			frame = append(frame, '\n')
		}
		frame = fmt.Appendf(frame, `{"id":%d,"subscribe":{"channel":"away:%d"}}`, i+2, i)
	}
	start := time.Now()
	w.write(textFrame(string(frame)))
	for range n {
		if r := decodeReply(t, w.readText()); r.Error == nil || r.Error.Code != 100 {
			t.Fatalf("subscribe while the controller is away: %+v, want error 100", r)
		}
	}
	// One cycle of Recover retries is ~5 s; one after another it would be n of them.
	if d := time.Since(start); d > 3*n/2*time.Second {
		t.Fatalf("%d subscribers told after %v, want about one retry cycle", n, d)
	}
}
