package relay

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	centrifuge "github.com/centrifugal/centrifuge-go"

	"github.com/herald-chat/herald/internal/auth"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// slowConn reports a full socket and records what was written.
type slowConn struct {
	benchConn
	outbound int
	written  [][]byte
	closed   bool
}

func (c *slowConn) OutboundBuffered() int { return c.outbound }
func (c *slowConn) Write(b []byte) (int, error) {
	c.written = append(c.written, append([]byte(nil), b...))
	return len(b), nil
}
func (c *slowConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		_, _ = c.Write(b)
		n += len(b)
	}
	return n, nil
}
func (c *slowConn) Close() error { c.closed = true; return nil }

func TestSlowConsumerDisconnect(t *testing.T) {
	s, l := benchServer(t, "room", 0)
	s.cfg.OutboundCap = 1000
	fast, slow := &slowConn{}, &slowConn{outbound: 990}
	var clients []*client
	for _, c := range []*slowConn{fast, slow} {
		cl := &client{c: c, l: l, state: stateConnected}
		l.addConn(cl)
		l.addSub(cl, &subscription{ch: "room", state: subLive})
		clients = append(clients, cl)
	}
	it := pubItem(&heraldv1.Publication{Channel: "room", Seq: 1, Epoch: "e", Message: &heraldv1.Message{Data: []byte(`{"x":1}`)}})
	frame := it.grp.frame
	l.deliver([]item{it})
	l.flush()

	if fast.closed || len(fast.written) != 1 || string(fast.written[0]) != string(frame) {
		t.Fatalf("fast client: closed=%v written=%q", fast.closed, fast.written)
	}
	if !slow.closed || clients[1].closeCode != 3008 {
		t.Fatalf("slow client not disconnected: closed=%v code=%d", slow.closed, clients[1].closeCode)
	}
	last := slow.written[len(slow.written)-1]
	if last[0] != 0x80|opClose || binary.BigEndian.Uint16(last[2:]) != 3008 {
		t.Fatalf("slow client did not get close 3008: %q", last)
	}
	for _, w := range slow.written {
		if string(w) == string(frame) {
			t.Fatal("push written to the slow client")
		}
	}
}

// TestPendingOrderAcrossRecovery: pushes that arrive while a subscription is
// being positioned are sent after the reply, without duplicates.
func TestPendingOrderAcrossRecovery(t *testing.T) {
	_, l := benchServer(t, "room", 0)
	c := &slowConn{}
	cl := &client{c: c, l: l, state: stateConnected}
	l.addConn(cl)
	sub := &subscription{ch: "room", state: subRecovering, init: &subInit{cmdID: 9, recover: true, epoch: "e"}}
	l.addSub(cl, sub)
	mk := func(seq uint64) item {
		return pubItem(&heraldv1.Publication{Channel: "room", Seq: seq, Epoch: "e", Message: &heraldv1.Message{Data: []byte(`1`)}})
	}
	// Live pushes 5 and 6 arrive while recovery (joined at 4) runs.
	l.deliver([]item{mk(5), mk(6)})
	l.flush()
	if len(c.written) != 0 {
		t.Fatalf("pushes written before the subscribe reply: %q", c.written)
	}
	cl.resolve(sub, 4, true, []*heraldv1.Publication{{Seq: 3, Message: &heraldv1.Message{Data: []byte(`1`)}}, {Seq: 4, Message: &heraldv1.Message{Data: []byte(`1`)}}})
	l.deliver([]item{mk(6), mk(7)})
	l.flush()
	var offsets []uint64
	for i, w := range c.written {
		var r struct {
			ID        uint32 `json:"id"`
			Subscribe *struct {
				Offset       uint64 `json:"offset"`
				Recovered    bool   `json:"recovered"`
				Publications []struct {
					Offset uint64 `json:"offset"`
				} `json:"publications"`
			} `json:"subscribe"`
			Push *struct {
				Pub struct {
					Offset uint64 `json:"offset"`
				} `json:"pub"`
			} `json:"push"`
		}
		hs := 2
		if w[1]&0x7f == 126 {
			hs = 4
		}
		w = w[hs:]
		if err := json.Unmarshal(w, &r); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		switch {
		case i == 0:
			if r.ID != 9 || r.Subscribe == nil || r.Subscribe.Offset != 4 || !r.Subscribe.Recovered || len(r.Subscribe.Publications) != 2 {
				t.Fatalf("first frame is not the subscribe reply: %s", w)
			}
			for _, p := range r.Subscribe.Publications {
				offsets = append(offsets, p.Offset)
			}
		case r.Push != nil:
			offsets = append(offsets, r.Push.Pub.Offset)
		}
	}
	want := []uint64{3, 4, 5, 6, 7}
	if len(offsets) != len(want) {
		t.Fatalf("offsets %v, want %v", offsets, want)
	}
	for i := range want {
		if offsets[i] != want[i] {
			t.Fatalf("offsets %v, want %v", offsets, want)
		}
	}
}

func TestHistoryThroughManagement(t *testing.T) {
	var mu sync.Mutex
	var gotAuth, gotQuery, gotPath string
	mgmt := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotAuth, gotQuery, gotPath = r.Header.Get("Authorization"), r.URL.RawQuery, r.URL.Path
		mu.Unlock()
		_, _ = w.Write([]byte(`{"messages":[{"id":"a","channel":"hist","seq":2,"sender":"ann","info":{"n":1},"data":{"t":"two"},"published_at":1},{"id":"b","channel":"hist","seq":3,"sender":"ann","data":{"t":"three"},"published_at":2}],"next_cursor":""}`))
	}))
	t.Cleanup(mgmt.Close)
	e := startEnv(t, func(c *Config) { c.ManagementURL = mgmt.URL })
	tok := token(t, "ann", []string{"hist"}, nil, 0)
	h := newSDKClient(t, e.srv.Addr(), tok)
	h.connect(t, "hist")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.c.History(ctx, "hist", centrifuge.WithHistoryLimit(10), centrifuge.WithHistorySince(&centrifuge.StreamPosition{Offset: 1, Epoch: "ep-hist"}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Epoch != "ep-hist" || len(res.Publications) != 2 || res.Publications[0].Offset != 2 || string(res.Publications[1].Data) != `{"t":"three"}` || res.Publications[0].Info.User != "ann" {
		t.Fatalf("history result %+v", res)
	}
	mu.Lock()
	if gotPath != "/v1/channels/hist/messages" || gotQuery != "after=1&limit=10&order=asc" {
		t.Fatalf("management request: path=%s query=%s", gotPath, gotQuery)
	}
	// Management gets a grant for this user, channel and history only, short
	// lived; the client's own token never leaves the relay (it is not kept).
	grant, ok := strings.CutPrefix(gotAuth, "Bearer ")
	if !ok || grant == tok {
		t.Fatalf("management request: authorization %q is not a bearer grant of the relay's", gotAuth)
	}
	mu.Unlock()
	g, err := auth.NewVerifier(testSecret).Verify(grant)
	if err != nil {
		t.Fatalf("grant does not verify: %v", err)
	}
	if ttl := time.Until(g.ExpiresAt()); g.Subject != "ann" || !g.Allows("hist", auth.AllowHistory) || g.Allows("hist", auth.AllowSubscribe) ||
		g.Allows("other", auth.AllowHistory) || g.HasChannel("hist") || g.Admin || ttl <= 0 || ttl > historyGrantTTL {
		t.Fatalf("grant %+v (expires in %v): want sub ann, history of hist only, expiring within %v", g, ttl, historyGrantTTL)
	}

	_, err = h.c.History(ctx, "other", centrifuge.WithHistoryLimit(10))
	var serr *centrifuge.Error
	if !errors.As(err, &serr) || serr.Code != 103 {
		t.Fatalf("history of a foreign channel: %v", err)
	}
	_, err = h.c.History(ctx, "hist", centrifuge.WithHistoryLimit(10), centrifuge.WithHistorySince(&centrifuge.StreamPosition{Offset: 1, Epoch: "old"}))
	if !errors.As(err, &serr) || serr.Code != 112 {
		t.Fatalf("history with a stale epoch: %v", err)
	}
}
