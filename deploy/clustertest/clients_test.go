package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/partition"
)

// channelsOverPartitions returns n channels that fall in distinct partitions
// (as many as there are), so every controller owns some of them.
func channelsOverPartitions(prefix string, n int) []string {
	var out []string
	seen := map[int32]bool{}
	for i := 0; len(out) < n && i < 10000; i++ {
		ch := fmt.Sprintf("%s:%d", prefix, i)
		p := partition.For(ch, partitions)
		if seen[p] && len(seen) < partitions {
			continue
		}
		seen[p] = true
		out = append(out, ch)
	}
	return out
}

type pub struct {
	offset uint64
	data   string // compacted JSON
}

type subEvent struct {
	channel                  string
	wasRecovering, recovered bool
}

// client is a centrifuge-go client connected through nginx whose token
// subscribes it server-side to the test's channels; it records everything
// it receives.
type client struct {
	name     string
	channels []string
	c        *centrifuge.Client

	mu          sync.Mutex
	pubs        map[string][]pub
	subs        []subEvent
	reconnects  []uint32 // codes of the disconnects that led to reconnecting
	connected   bool
	activeSubs  map[string]bool // server-side subscriptions active since the last connect
	errs        []string
	subscribedC chan struct{}
	events      []string // the last events, for failure messages
}

// event records a line of the client's timeline; mu is held.
func (cl *client) event(format string, args ...any) {
	if len(cl.events) >= 400 {
		cl.events = cl.events[100:]
	}
	cl.events = append(cl.events, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

// timeline returns the client's recent events around reconnects.
func (cl *client) timeline() string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var keep []string
	for i, e := range cl.events {
		if !strings.Contains(e, " pub ") || nearNonPub(cl.events, i, 12) {
			keep = append(keep, e)
		}
	}
	return cl.name + " timeline (publications far from (re)connects omitted):\n  " + strings.Join(keep, "\n  ")
}

func nearNonPub(events []string, i, d int) bool {
	for j := max(0, i-d); j < min(len(events), i+d+1); j++ {
		if !strings.Contains(events[j], " pub ") {
			return true
		}
	}
	return false
}

func newClient(t *testing.T, c *cluster, name string, channels []string) *client {
	t.Helper()
	tok, err := auth.Sign(tokenSecret, auth.NewClaims(name, channels, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{
		name: name, channels: channels,
		pubs: map[string][]pub{}, activeSubs: map[string]bool{},
		subscribedC: make(chan struct{}, 1),
	}
	cl.c = centrifuge.NewJsonClient(c.wsURL, centrifuge.Config{
		Token:             tok,
		MinReconnectDelay: 50 * time.Millisecond,
		MaxReconnectDelay: 500 * time.Millisecond,
		HandshakeTimeout:  3 * time.Second,
		ReadTimeout:       5 * time.Second,
	})
	cl.c.OnPublication(func(e centrifuge.ServerPublicationEvent) {
		cl.mu.Lock()
		cl.pubs[e.Channel] = append(cl.pubs[e.Channel], pub{e.Offset, compact(e.Data)})
		cl.event("pub %s %d", e.Channel, e.Offset)
		cl.mu.Unlock()
	})
	cl.c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) {
		cl.mu.Lock()
		var pos string
		if e.StreamPosition != nil {
			pos = fmt.Sprintf("offset=%d epoch=%s", e.StreamPosition.Offset, e.StreamPosition.Epoch)
		}
		cl.event("subscribed %s wasRecovering=%v recovered=%v %s", e.Channel, e.WasRecovering, e.Recovered, pos)
		cl.subs = append(cl.subs, subEvent{e.Channel, e.WasRecovering, e.Recovered})
		cl.activeSubs[e.Channel] = true
		all := len(cl.activeSubs) == len(cl.channels)
		cl.mu.Unlock()
		if all {
			select {
			case cl.subscribedC <- struct{}{}:
			default:
			}
		}
	})
	cl.c.OnUnsubscribed(func(e centrifuge.ServerUnsubscribedEvent) {
		cl.mu.Lock()
		delete(cl.activeSubs, e.Channel)
		cl.errs = append(cl.errs, "server-side subscription removed: "+e.Channel)
		cl.mu.Unlock()
	})
	cl.c.OnConnected(func(e centrifuge.ConnectedEvent) {
		cl.mu.Lock()
		cl.event("connected %s", e.ClientID)
		cl.connected = true
		cl.mu.Unlock()
	})
	cl.c.OnConnecting(func(e centrifuge.ConnectingEvent) {
		cl.mu.Lock()
		cl.event("connecting %d %s", e.Code, e.Reason)
		if cl.connected {
			cl.reconnects = append(cl.reconnects, e.Code)
		}
		cl.connected = false
		clear(cl.activeSubs)
		cl.mu.Unlock()
	})
	cl.c.OnDisconnected(func(e centrifuge.DisconnectedEvent) {
		cl.mu.Lock()
		cl.connected = false
		if e.Code != 0 {
			cl.errs = append(cl.errs, fmt.Sprintf("disconnected for good: %d %s", e.Code, e.Reason))
		}
		cl.mu.Unlock()
	})
	if err := cl.c.Connect(); err != nil {
		t.Fatalf("%s: connect: %v", name, err)
	}
	t.Cleanup(cl.c.Close)
	select {
	case <-cl.subscribedC:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: server-side subscriptions not active after 20s (state %v)", name, cl.c.State())
	}
	return cl
}

func newClients(t *testing.T, c *cluster, n int, channels []string) []*client {
	t.Helper()
	out := make([]*client, n)
	for i := range out {
		out[i] = newClient(t, c, fmt.Sprintf("user-%d", i), channels)
	}
	return out
}

// ready reports whether the client is connected with all its server-side
// subscriptions active.
func (cl *client) ready() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.connected && len(cl.activeSubs) == len(cl.channels)
}

func (cl *client) received(ch string) []pub {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]pub(nil), cl.pubs[ch]...)
}

// waitAllReady waits until every client is connected and subscribed again.
func waitAllReady(t *testing.T, clients []*client, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var notReady []string
		for _, cl := range clients {
			if !cl.ready() {
				notReady = append(notReady, cl.name)
			}
		}
		if len(notReady) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("clients not reconnected and resubscribed after %v: %v", timeout, notReady)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

// --- load ----------------------------------------------------------------------

type pubErr struct {
	at  time.Time
	err error
}

// load publishes from some clients, each one message at a time (waiting for
// its reply) every interval, round-robin over the channels, and records
// which messages were acknowledged.
type load struct {
	mu       sync.Mutex
	acked    map[string]string    // data → channel
	ackedAt  map[string]time.Time // data → when the ack arrived
	sentAt   map[string]time.Time
	errs     []pubErr
	attempts int

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startLoad(pubs []*client, channels []string, interval time.Duration) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{acked: map[string]string{}, ackedAt: map[string]time.Time{}, sentAt: map[string]time.Time{}, cancel: cancel}
	for pi, cl := range pubs {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				ch := channels[(i+pi)%len(channels)]
				data := fmt.Sprintf(`{"from":%q,"i":%d}`, cl.name, i)
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				sent := time.Now()
				_, err := cl.c.Publish(pctx, ch, []byte(data))
				pcancel()
				l.mu.Lock()
				l.attempts++
				if err == nil {
					l.acked[data] = ch
					l.ackedAt[data] = time.Now()
					l.sentAt[data] = sent
				} else if ctx.Err() == nil {
					l.errs = append(l.errs, pubErr{time.Now(), err})
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// ackedSince counts acks that arrived after t.
func (l *load) ackedSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.ackedAt {
		if at.After(t) {
			n++
		}
	}
	return n
}

func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	kinds := map[string]int{}
	for _, e := range l.errs {
		kinds[e.err.Error()]++
	}
	var ks []string
	for k, n := range kinds {
		ks = append(ks, fmt.Sprintf("%dx %q", n, k))
	}
	slices.Sort(ks)
	out := fmt.Sprintf("%d publishes, %d acked, %d failed", l.attempts, len(l.acked), len(l.errs))
	if len(ks) > 0 {
		out += " (" + strings.Join(ks, ", ") + ")"
	}
	return out
}

// --- verification ----------------------------------------------------------------

// verify waits until the system settled after the load stopped, then checks
// the guarantees on every channel: the store (read through nginx) holds seqs
// 1..N with no gap and no duplicate message, every acknowledged publish
// exactly once, and every client received exactly that sequence, in order
// (live or recovered).
func verify(t *testing.T, c *cluster, clients []*client, channels []string, l *load) {
	t.Helper()
	l.mu.Lock()
	ackedBy := map[string][]string{}
	for data, ch := range l.acked {
		ackedBy[ch] = append(ackedBy[ch], data)
	}
	l.mu.Unlock()

	total := 0
	for _, ch := range channels {
		hist := settle(t, c, clients, ch, ackedBy[ch])
		total += len(hist)
		seen := map[string]uint64{}
		for i, m := range hist {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: store position %d has seq %d, want %d (gap or duplicate)", ch, i, m.Seq, i+1)
			}
			d := compact(m.Data)
			if prev, dup := seen[d]; dup {
				t.Fatalf("%s: message %s stored twice, seqs %d and %d", ch, d, prev, m.Seq)
			}
			seen[d] = m.Seq
		}
		for _, d := range ackedBy[ch] {
			if _, ok := seen[d]; !ok {
				t.Fatalf("%s: acknowledged publish %s is not in the store (%d messages)", ch, d, len(hist))
			}
		}
		for _, cl := range clients {
			got := cl.received(ch)
			for i, p := range got {
				if i >= len(hist) {
					t.Fatalf("%s: %s received %d publications, the store has %d", ch, cl.name, len(got), len(hist))
				}
				if p.offset != uint64(i+1) {
					t.Fatalf("%s: %s's publication %d has offset %d, want %d (gap, duplicate or reorder; offsets around: %v)\n%s",
						ch, cl.name, i, p.offset, i+1, offsetsAround(got, i), cl.timeline())
				}
				if want := compact(hist[i].Data); p.data != want {
					t.Fatalf("%s: %s got %s at offset %d, the store has %s", ch, cl.name, p.data, p.offset, want)
				}
			}
			if len(got) != len(hist) {
				t.Fatalf("%s: %s received %d publications, the store has %d", ch, cl.name, len(got), len(hist))
			}
		}
	}
	for _, cl := range clients {
		cl.mu.Lock()
		for _, s := range cl.subs {
			if s.wasRecovering && !s.recovered {
				t.Errorf("%s: resubscribe to %s was not recovered (recovered=false)", cl.name, s.channel)
			}
		}
		if len(cl.errs) > 0 {
			t.Errorf("%s: %s", cl.name, strings.Join(cl.errs, "; "))
		}
		cl.mu.Unlock()
	}
	t.Logf("verified %d channels, %d stored messages, %d clients: %s", len(channels), total, len(clients), l.summary())
}

// settle polls the history of ch until it holds every acknowledged message,
// did not change for a while, and every client received as many
// publications as it holds; it returns that history.
func settle(t *testing.T, c *cluster, clients []*client, ch string, acked []string) []historyMessage {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	prev := -1
	var why string
	for {
		hist, err := c.history(ch)
		switch {
		case err != nil:
			why = err.Error()
		default:
			why = ""
			have := map[string]bool{}
			for _, m := range hist {
				have[compact(m.Data)] = true
			}
			missing := 0
			for _, d := range acked {
				if !have[d] {
					missing++
				}
			}
			if missing > 0 {
				why = fmt.Sprintf("%d acknowledged messages not in the store yet", missing)
			}
			for _, cl := range clients {
				if n := len(cl.received(ch)); why == "" && n < len(hist) {
					why = fmt.Sprintf("%s has %d of %d publications", cl.name, n, len(hist))
				}
			}
			if why == "" && len(hist) == prev {
				return hist
			}
			prev = len(hist)
		}
		if time.Now().After(deadline) {
			if hist != nil {
				return hist // the checks in verify say what is wrong
			}
			t.Fatalf("%s did not settle after 30s: %s", ch, why)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func offsetsAround(ps []pub, i int) []uint64 {
	var out []uint64
	for j := max(0, i-3); j < min(len(ps), i+4); j++ {
		out = append(out, ps[j].offset)
	}
	return out
}
