package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// relayView is what one relay makes of the streams of every controller it is
// connected to, applying the relay's rules (docs/architecture.md, I4): a publication
// whose seq is not above the last one accepted for its channel is dropped; a
// gap (seq > last+1) is filled from Recover before going on. It also checks
// the wire: a seq may arrive more than once (replays after a crash) only
// with the identical message.
type relayView struct {
	tb testing.TB

	mu        sync.Mutex
	clients   map[string]heraldv1.RouterClient // controller id → client
	last      map[string]uint64
	epoch     map[string]string
	accepted  map[string][]*heraldv1.Publication // relay-visible, in order
	wire      map[string]map[uint64]string       // channel → seq → message id
	live      map[string]map[string][]uint64     // controller id → channel → seqs received
	owns      map[string]*heraldv1.Ownership     // controller id → last announcement
	dups      int                                // identical replays seen on the wire
	recovered int                                // publications filled in from Recover
	errs      []string
}

func newRelayView(tb testing.TB) *relayView {
	return &relayView{
		tb:       tb,
		clients:  map[string]heraldv1.RouterClient{},
		last:     map[string]uint64{},
		epoch:    map[string]string{},
		accepted: map[string][]*heraldv1.Publication{},
		wire:     map[string]map[uint64]string{},
		live:     map[string]map[string][]uint64{},
		owns:     map[string]*heraldv1.Ownership{},
	}
}

// attach opens a stream to the controller ctl at addr with interest in
// channels.
func (v *relayView) attach(addr, ctl string, channels ...string) {
	v.tb.Helper()
	client := dialController(v.tb, addr)
	ctx, cancel := context.WithCancel(context.Background())
	v.tb.Cleanup(cancel)
	st, err := client.Stream(ctx)
	if err != nil {
		v.tb.Fatal(err)
	}
	if err := st.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Hello{Hello: &heraldv1.Hello{RelayId: "relay-view"}}}); err != nil {
		v.tb.Fatal(err)
	}
	if err := st.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Interest{Interest: &heraldv1.InterestDelta{Add: channels}}}); err != nil {
		v.tb.Fatal(err)
	}
	v.mu.Lock()
	v.clients[ctl] = client
	v.live[ctl] = map[string][]uint64{}
	v.mu.Unlock()
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			if o := m.GetOwnership(); o != nil {
				v.mu.Lock()
				v.owns[ctl] = o
				v.mu.Unlock()
			}
			for _, p := range m.GetBatch().GetPublications() {
				v.onPub(ctl, p)
			}
		}
	}()
}

func (v *relayView) errorf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Sprintf(format, args...))
}

// onWire checks a publication against every earlier one of the same seq.
func (v *relayView) onWire(p *heraldv1.Publication) {
	w := v.wire[p.Channel]
	if w == nil {
		w = map[uint64]string{}
		v.wire[p.Channel] = w
	}
	id, seen := w[p.Seq]
	switch {
	case !seen:
		w[p.Seq] = p.Message.GetId()
	case id != p.Message.GetId():
		v.errorf("%s seq %d sent as message %s and as message %s", p.Channel, p.Seq, id, p.Message.GetId())
	default:
		v.dups++
	}
}

func (v *relayView) onPub(ctl string, p *heraldv1.Publication) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.onWire(p)
	v.live[ctl][p.Channel] = append(v.live[ctl][p.Channel], p.Seq)
	ch := p.Channel
	last := v.last[ch]
	if p.Seq <= last {
		return // the relay drops it
	}
	if p.Seq > last+1 {
		for _, g := range v.recoverGap(ctl, ch, last, p.Seq) {
			v.accept(g)
		}
		if v.last[ch] != p.Seq-1 {
			return // reported by recoverGap
		}
	}
	v.accept(p)
}

func (v *relayView) accept(p *heraldv1.Publication) {
	ch := p.Channel
	if e := v.epoch[ch]; e != "" && e != p.Epoch {
		v.errorf("%s seq %d has epoch %s, earlier %s", ch, p.Seq, p.Epoch, e)
	}
	v.epoch[ch] = p.Epoch
	v.accepted[ch] = append(v.accepted[ch], p)
	v.last[ch] = p.Seq
}

// recoverGap asks the controller that sent seq (or, when it is gone, any
// other) for last+1..seq-1, as a relay does.
func (v *relayView) recoverGap(ctl, ch string, last, seq uint64) []*heraldv1.Publication {
	order := []string{ctl}
	for id := range v.clients {
		if id != ctl {
			order = append(order, id)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, id := range order {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := v.clients[id].Recover(ctx, &heraldv1.RecoverRequest{Channel: ch, Since: last, Epoch: v.epoch[ch], Limit: 1 << 20})
			cancel()
			if err != nil {
				continue // not the owner, catching up, or gone
			}
			if !resp.Recovered {
				v.errorf("%s: gap %d..%d not recoverable (head %d)", ch, last+1, seq-1, resp.Offset)
				return nil
			}
			var out []*heraldv1.Publication
			for _, p := range resp.Publications {
				if p.Seq < seq {
					v.onWire(p)
					out = append(out, p)
				}
			}
			if uint64(len(out)) != seq-1-last || (len(out) > 0 && out[0].Seq != last+1) {
				v.errorf("%s: Recover since %d gave %d publications, want %d..%d", ch, last, len(out), last+1, seq-1)
				return nil
			}
			v.recovered += len(out)
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
	v.errorf("%s: gap %d..%d: no controller answered Recover", ch, last+1, seq-1)
	return nil
}

func (v *relayView) lastSeq(ch string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last[ch]
}

// waitAll waits until every channel's relay-visible sequence reached n.
func (v *relayView) waitAll(channels []string, n int) {
	v.tb.Helper()
	for _, ch := range channels {
		waitFor(v.tb, 30*time.Second, fmt.Sprintf("relay-visible seq %d of %s", n, ch), func() bool {
			return v.lastSeq(ch) >= uint64(n)
		})
	}
}

// check asserts that the relay saw exactly seqs 1..n of every channel, in
// Kafka order (message ids numbered in produce order), with no wire error.
func (v *relayView) check(channels []string, n int) {
	v.tb.Helper()
	v.waitAll(channels, n)
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.errs) > 0 {
		v.tb.Fatalf("relay view errors:\n%s", strings.Join(v.errs, "\n"))
	}
	for _, ch := range channels {
		pubs := v.accepted[ch]
		if len(pubs) != n {
			v.tb.Fatalf("%s: relay-visible %d publications, want %d", ch, len(pubs), n)
		}
		checkDense(v.tb, ch, pubs, 1, 0)
	}
}

// liveAfter reports whether controller ctl streamed a publication of ch
// with seq above after.
func (v *relayView) liveAfter(ctl, ch string, after uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.live[ctl][ch]
	return len(s) > 0 && s[len(s)-1] > after
}

func (v *relayView) ownership(ctl string) *heraldv1.Ownership {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.owns[ctl]
}

// crashableController is a controller in the test process that can be
// crashed (see crashSwitch).
type crashableController struct {
	*runningController
	sw    *crashSwitch
	store *crashStore
}

func startCrashable(tb testing.TB, cfg Config, st store.Store) *crashableController {
	tb.Helper()
	sw := newCrashSwitch()
	cst := newCrashStore(tb, st, sw)
	// The remains of a crashed controller stop within a few ShutdownTimeouts
	// (their group leave cannot reach Kafka); keep it short unless set.
	if cfg.ShutdownTimeout == testConfig(nil, 1, "").ShutdownTimeout {
		cfg.ShutdownTimeout = time.Second
	}
	s, err := New(cfg, cst, testLogger(tb).With("controller", cfg.ID), prometheus.NewRegistry(),
		append(fastGroup(), kgo.SessionTimeout(time.Second), kgo.Dialer(sw.dial))...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	s.crashOnStop = true
	sw.srv = s
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningController{Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- s.Run(ctx) }()
	tb.Cleanup(func() {
		sw.trip()
		cancel()
		select {
		case <-rc.done:
		case <-time.After(30 * time.Second):
			tb.Errorf("crashed controller %s did not stop", cfg.ID)
		}
	})
	return &crashableController{runningController: rc, sw: sw, store: cst}
}

// crash kills the controller now; its remains are cleaned up in the
// background.
func (c *crashableController) crash() {
	c.sw.trip()
	c.cancel()
}

// crashed waits until an armed crash point tripped, then lets the remains
// stop.
func (c *crashableController) crashed(tb testing.TB) {
	tb.Helper()
	c.sw.waitTripped(tb)
	c.cancel()
}

// waitCheckpoints waits until every partition's store checkpoint reached
// the partition's end offset (everything produced is persisted).
func waitCheckpoints(tb testing.TB, brokers []string, st store.Store, parts int32) {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, testTopic)
	if err != nil {
		tb.Fatal(err)
	}
	for p := int32(0); p < parts; p++ {
		o, ok := ends.Lookup(testTopic, p)
		if !ok {
			tb.Fatalf("no end offset for partition %d", p)
		}
		var got int64
		waitFor(tb, 30*time.Second, fmt.Sprintf("checkpoint of partition %d to reach %d", p, o.Offset), func() bool {
			ps, err := st.LoadPartition(context.Background(), p)
			got = ps.NextOffset
			return err == nil && ps.NextOffset >= o.Offset
		})
		if got != o.Offset {
			tb.Fatalf("partition %d checkpoint %d beyond end offset %d", p, got, o.Offset)
		}
	}
}

// storedAll checks that st holds every channel's messages 1..n exactly once
// in produce order.
func storedAll(tb testing.TB, st store.Store, channels []string, n int) {
	tb.Helper()
	for _, ch := range channels {
		storedDense(tb, st, ch, n)
	}
}
