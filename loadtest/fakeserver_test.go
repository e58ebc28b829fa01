package loadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
)

// fakeServer is a minimal Centrifugo-protocol v2 server for tests: it checks
// HS256 tokens, assigns offsets per channel, keeps full history, broadcasts
// publications, serves recovery and sends pings. Pushes are sent together
// with a ping in one frame ("push\n{}") to exercise multi-message frames.
type fakeServer struct {
	t       testing.TB
	secret  string
	URL     string
	refuse  atomic.Int64 // refuse (HTTP 503) the next N upgrades
	pingInt time.Duration

	mu       sync.Mutex
	channels map[string]*fakeChannel
	conns    map[*fakeConn]struct{}
	accepted atomic.Int64
	pongs    atomic.Int64

	ln net.Listener
	wg sync.WaitGroup
}

type fakeChannel struct {
	epoch string
	pubs  [][]byte // pubs[i] is the data of offset i+1
	subs  map[*fakeConn]struct{}
}

type fakeConn struct {
	nc  net.Conn
	wmu sync.Mutex
}

func (c *fakeConn) write(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = wsutil.WriteServerMessage(c.nc, ws.OpText, b)
}

func newFakeServer(t testing.TB, secret string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, secret: secret, ln: ln, channels: map[string]*fakeChannel{}, conns: map[*fakeConn]struct{}{},
		pingInt: 200 * time.Millisecond}
	s.URL = "ws://" + ln.Addr().String() + "/connection/websocket"
	srv := &http.Server{Handler: http.HandlerFunc(s.handle)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.nc.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) handle(w http.ResponseWriter, r *http.Request) {
	if s.refuse.Add(-1) >= 0 {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	nc, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	s.accepted.Add(1)
	c := &fakeConn{nc: nc}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		for _, ch := range s.channels {
			delete(ch.subs, c)
		}
		s.mu.Unlock()
		_ = nc.Close()
	}()
	stopPing := make(chan struct{})
	defer close(stopPing)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(s.pingInt)
		defer t.Stop()
		for {
			select {
			case <-stopPing:
				return
			case <-t.C:
				c.write([]byte("{}"))
			}
		}
	}()
	for {
		data, op, err := wsutil.ReadClientData(nc)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			if !s.command(c, line) {
				return
			}
		}
	}
}

type fakeCmd struct {
	ID      uint32 `json:"id"`
	Connect *struct {
		Token string                 `json:"token"`
		Subs  map[string]subPosition `json:"subs"`
	} `json:"connect"`
	Subscribe *struct {
		Channel string `json:"channel"`
		Recover bool   `json:"recover"`
		Offset  uint64 `json:"offset"`
		Epoch   string `json:"epoch"`
	} `json:"subscribe"`
	Publish *struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	} `json:"publish"`
}

func (s *fakeServer) command(c *fakeConn, line []byte) bool {
	var cmd fakeCmd
	if err := json.Unmarshal(line, &cmd); err != nil {
		s.t.Errorf("fake server: bad command %q: %v", line, err)
		return false
	}
	// One lock over each command and its writes: a subscriber sees its
	// subscribe reply before any push above the offset it reports.
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case cmd.ID == 0:
		s.pongs.Add(1)
	case cmd.Connect != nil:
		var claims struct {
			jwt.RegisteredClaims
			Channels []string `json:"channels"`
		}
		if _, err := jwt.ParseWithClaims(cmd.Connect.Token, &claims, func(*jwt.Token) (any, error) { return []byte(s.secret), nil }); err != nil {
			c.write(fmt.Appendf(nil, `{"id":%d,"error":{"code":3500,"message":"invalid token"}}`, cmd.ID))
			return false
		}
		subs := map[string]json.RawMessage{}
		for _, ch := range claims.Channels {
			pos := cmd.Connect.Subs[ch]
			subs[ch] = s.subscribe(c, ch, pos.Recover, pos.Offset, pos.Epoch)
		}
		b, _ := json.Marshal(subs)
		c.write(fmt.Appendf(nil, `{"id":%d,"connect":{"client":"c","version":"fake","subs":%s}}`, cmd.ID, b))
	case cmd.Subscribe != nil:
		r := s.subscribe(c, cmd.Subscribe.Channel, cmd.Subscribe.Recover, cmd.Subscribe.Offset, cmd.Subscribe.Epoch)
		c.write(fmt.Appendf(nil, `{"id":%d,"subscribe":%s}`, cmd.ID, r))
	case cmd.Publish != nil:
		ch := s.channel(cmd.Publish.Channel)
		ch.pubs = append(ch.pubs, cmd.Publish.Data)
		off := len(ch.pubs)
		push := fmt.Appendf(nil, `{"push":{"channel":%q,"pub":{"data":%s,"offset":%d}}}`+"\n{}", cmd.Publish.Channel, cmd.Publish.Data, off)
		targets := make([]*fakeConn, 0, len(ch.subs))
		for sc := range ch.subs {
			targets = append(targets, sc)
		}
		// Deliver while holding the lock so every subscriber sees offsets in order.
		for _, sc := range targets {
			sc.write(push)
		}
		c.write(fmt.Appendf(nil, `{"id":%d,"publish":{}}`, cmd.ID))
	default:
		c.write(fmt.Appendf(nil, `{"id":%d,"error":{"code":104,"message":"not available"}}`, cmd.ID))
	}
	return true
}

func (s *fakeServer) channel(name string) *fakeChannel {
	ch := s.channels[name]
	if ch == nil {
		ch = &fakeChannel{epoch: "ep-" + name, subs: map[*fakeConn]struct{}{}}
		s.channels[name] = ch
	}
	return ch
}

// subscribe registers c and returns the subscribe result JSON. Caller holds mu.
func (s *fakeServer) subscribe(c *fakeConn, name string, recover bool, offset uint64, epoch string) json.RawMessage {
	ch := s.channel(name)
	ch.subs[c] = struct{}{}
	top := uint64(len(ch.pubs))
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"recoverable":true,"epoch":%q,"offset":%d`, ch.epoch, top)
	if recover && epoch == ch.epoch && offset <= top {
		b.WriteString(`,"recovered":true,"was_recovering":true,"publications":[`)
		for i := offset; i < top; i++ {
			if i > offset {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"data":%s,"offset":%s}`, ch.pubs[i], strconv.FormatUint(i+1, 10))
		}
		b.WriteString(`]`)
	}
	b.WriteString(`}`)
	return b.Bytes()
}

// sleepChan is closed after ms milliseconds or when ctx ends.
func sleepChan(ctx interface{ Done() <-chan struct{} }, ms int) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(ms) * time.Millisecond):
		}
	}()
	return ch
}
