package relay

import (
	"encoding/binary"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/protocol"
)

// connectRaw dials, upgrades and connects with tok.
func connectRaw(t testing.TB, addr, tok string) (*wsConn, *protocol.Reply) {
	t.Helper()
	w := dialWS(t, addr)
	w.write(textFrame(connectCmd(1, tok)))
	r := decodeReply(t, w.readText())
	if r.Connect == nil {
		t.Fatalf("connect failed: %+v", r)
	}
	return w, r
}

var pubAll = []auth.Capability{{Channels: []string{"*"}, Match: "wildcard", Allow: []string{"pub", "sub"}}}

func TestPublishRateLimit(t *testing.T) {
	// Kafka is unreachable: accepted publishes stay pending, which is fine,
	// only the rejections are checked.
	srv := startRelay(t, func(c *Config) { c.PublishRate = 5; c.PublishBurst = 5; c.PublishAbuseLimit = 10 })
	w, _ := connectRaw(t, srv.Addr(), token(t, "spam", nil, pubAll, 0))
	var cmds []string
	for i := 2; i < 40; i++ {
		cmds = append(cmds, `{"id":`+itoa(i)+`,"publish":{"channel":"c","data":{}}}`)
	}
	w.write(textFrame(strings.Join(cmds, "\n")))
	limited := 0
	for {
		op, p := w.readFrame()
		if op == opClose {
			if code := binary.BigEndian.Uint16(p); code != 3013 {
				t.Fatalf("close %d, want 3013", code)
			}
			break
		}
		for _, r := range mustReplies(t, string(p)) {
			if r.Error == nil || r.Error.Code != 111 || r.ID < 7 {
				t.Fatalf("unexpected reply %+v (the first 5 are within the burst)", r)
			}
			limited++
		}
	}
	if limited != 11 {
		t.Fatalf("%d publishes rejected with 111 before the disconnect, want 11", limited)
	}

	t.Run("refill", func(t *testing.T) {
		w, _ := connectRaw(t, srv.Addr(), token(t, "calm", nil, pubAll, 0))
		burst := strings.Repeat(`{"id":2,"publish":{"channel":"c","data":{}}}`+"\n", 5)
		w.write(textFrame(burst + `{"id":3,"publish":{"channel":"c","data":{}}}`))
		if r := decodeReply(t, w.readText()); r.ID != 3 || r.Error == nil || r.Error.Code != 111 {
			t.Fatalf("6th publish of a burst of 5: %+v", r)
		}
		time.Sleep(250 * time.Millisecond) // one token back at 5/s
		w.write(textFrame(`{"id":4,"publish":{"channel":"c","data":{}}}` + "\n" + `{"id":5,"ping":{}}`))
		if r := decodeReply(t, w.readText()); r.ID != 5 {
			t.Fatalf("publish after refill was rejected: %+v", r)
		}
	})
}

func TestMaxSubscriptions(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.MaxSubscriptions = 2 })
	w, _ := connectRaw(t, e.srv.Addr(), token(t, "many", []string{"s1"}, pubAll, 0))
	w.write(textFrame(`{"id":2,"subscribe":{"channel":"c1"}}`))
	if r := decodeReply(t, w.readText()); r.ID != 2 || r.Subscribe == nil {
		t.Fatalf("second subscription refused: %+v", r)
	}
	w.write(textFrame(`{"id":3,"subscribe":{"channel":"c2"}}`))
	if r := decodeReply(t, w.readText()); r.ID != 3 || r.Error == nil || r.Error.Code != 106 {
		t.Fatalf("third subscription: %+v, want error 106", r)
	}
	// After an unsubscribe there is room again.
	w.write(textFrame(`{"id":4,"unsubscribe":{"channel":"c1"}}` + "\n" + `{"id":5,"subscribe":{"channel":"c2"}}`))
	if r := decodeReply(t, w.readText()); r.ID != 4 || r.Unsubscribe == nil {
		t.Fatalf("unsubscribe: %+v", r)
	}
	if r := decodeReply(t, w.readText()); r.ID != 5 || r.Subscribe == nil {
		t.Fatalf("subscribe after unsubscribe: %+v", r)
	}
}

func TestSlowloris(t *testing.T) {
	srv := startRelay(t, func(c *Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	w := dialRaw(t, srv.Addr())
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := []byte(upgradeRequest)
		for i := range req[:len(req)-1] { // never completes
			if _, err := w.c.Write(req[i : i+1]); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	head, err := io.ReadAll(w.br)
	elapsed := time.Since(start)
	if elapsed > 2*time.Second || elapsed < 400*time.Millisecond {
		t.Fatalf("closed after %v, want about the 500ms handshake timeout (err %v)", elapsed, err)
	}
	if !strings.HasPrefix(string(head), "HTTP/1.1 408") {
		t.Fatalf("got %q, want a 408", head)
	}
	_ = w.c.Close()
	<-done
}

func TestIdleTimeout(t *testing.T) {
	srv := startRelay(t, func(c *Config) {
		c.IdleTimeout = 400 * time.Millisecond
		c.PingInterval = 10 * time.Second
		c.HandshakeTimeout = 10 * time.Second
	})
	t.Run("connected client dribbling a frame", func(t *testing.T) {
		w, _ := connectRaw(t, srv.Addr(), token(t, "idle", nil, nil, 0))
		f := textFrame(`{"id":2,"ping":{}}`)
		w.write(f[:3]) // never completed
		w.expectClose(3012)
	})
	t.Run("upgraded without connect", func(t *testing.T) {
		w := dialWS(t, srv.Addr())
		w.expectClose(3502)
	})
	t.Run("active client stays", func(t *testing.T) {
		w, _ := connectRaw(t, srv.Addr(), token(t, "busy", nil, nil, 0))
		for i := 0; i < 6; i++ {
			time.Sleep(150 * time.Millisecond)
			w.write(textFrame(`{"id":` + itoa(i+2) + `,"ping":{}}`))
			if r := decodeReply(t, w.readText()); r.ID != uint32(i+2) {
				t.Fatalf("got %+v", r)
			}
		}
	})
}

func TestOriginAllowlist(t *testing.T) {
	srv := startRelay(t, func(c *Config) {
		c.AllowedOrigins = []string{"https://app.example.com", "https://*.chat.example"}
	})
	withOrigin := func(o string) string {
		return strings.Replace(upgradeRequest, "Host: x\r\n", "Host: x\r\nOrigin: "+o+"\r\n", 1)
	}
	for _, tt := range []struct {
		name, req, status string
	}{
		{"exact", withOrigin("https://APP.example.com"), "101"},
		{"pattern", withOrigin("https://eu.chat.example"), "101"},
		{"no origin", upgradeRequest, "101"},
		{"refused", withOrigin("https://evil.example"), "403"},
		{"pattern does not cross dots", withOrigin("https://a.b.chat.example.evil"), "403"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := dialRaw(t, srv.Addr())
			w.write([]byte(tt.req))
			if head := w.readHTTPHead(); !strings.HasPrefix(head, "HTTP/1.1 "+tt.status) {
				t.Fatalf("got %q, want %s", head, tt.status)
			}
		})
	}
}

// tokenExpiring signs a connection token of user expiring at exp.
func tokenExpiring(t testing.TB, user string, channels []string, caps []auth.Capability, exp time.Time) string {
	t.Helper()
	c := auth.NewClaims(user, channels, 0)
	c.Caps = caps
	c.RegisteredClaims.ExpiresAt = jwt.NewNumericDate(exp)
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func subTokenExpiring(t testing.TB, user, channel string, exp time.Time) string {
	t.Helper()
	c := &auth.SubscriptionClaims{Channel: channel}
	c.Subject = user
	c.ExpiresAt = jwt.NewNumericDate(exp)
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// closedInTime fails unless an expiry at exp (+ the test's 100 ms
// ExpiredCloseDelay) was enforced within a few timer ticks, not at the
// connection's next ping (12-25 s later with the default interval).
func closedInTime(t *testing.T, exp time.Time) {
	t.Helper()
	if late := time.Since(exp); late > 2*time.Second {
		t.Fatalf("closed %v after the token expired, want within a few 250 ms ticks", late.Round(time.Millisecond))
	}
}

func TestTokenExpiry(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.ExpiredCloseDelay = 100 * time.Millisecond })
	addr := e.srv.Addr()
	exp := time.Now().Add(2 * time.Second)

	t.Run("connection token", func(t *testing.T) {
		t.Parallel()
		late, r := connectRaw(t, addr, tokenExpiring(t, "late", nil, nil, exp))
		if !r.Connect.Expires || r.Connect.TTL == 0 || r.Connect.TTL > 2 {
			t.Fatalf("connect reply without expiry: %+v", r.Connect)
		}
		fresh, _ := connectRaw(t, addr, tokenExpiring(t, "fresh", nil, nil, exp))
		fresh.write(textFrame(`{"id":2,"refresh":{"token":"` + token(t, "fresh", nil, nil, time.Hour) + `"}}`))
		if r := decodeReply(t, fresh.readText()); r.Refresh == nil || !r.Refresh.Expires || r.Refresh.TTL < 3000 {
			t.Fatalf("refresh reply %+v", r)
		}
		// Refreshing with another user's token is an invalid token.
		other, _ := connectRaw(t, addr, tokenExpiring(t, "other", nil, nil, exp))
		other.write(textFrame(`{"id":2,"refresh":{"token":"` + token(t, "mallory", nil, nil, time.Hour) + `"}}`))
		other.expectClose(3500)

		// A refresh may also shorten the expiry: the timer must follow.
		shortened, _ := connectRaw(t, addr, token(t, "shortened", nil, nil, time.Hour))
		shortened.write(textFrame(`{"id":2,"refresh":{"token":"` + tokenExpiring(t, "shortened", nil, nil, exp) + `"}}`))
		if r := decodeReply(t, shortened.readText()); r.Refresh == nil || !r.Refresh.Expires || r.Refresh.TTL > 2 {
			t.Fatalf("shortening refresh reply %+v", r)
		}

		late.expectClose(3005)
		if time.Now().Before(exp.Truncate(time.Second)) { // JWT exp has second precision
			t.Fatal("closed before the token expired")
		}
		closedInTime(t, exp)
		shortened.expectClose(3005)
		closedInTime(t, exp)
		fresh.write(textFrame(`{"id":3,"ping":{}}`))
		if r := decodeReply(t, fresh.readText()); r.ID != 3 {
			t.Fatalf("refreshed connection: %+v", r)
		}
	})
	t.Run("subscription token", func(t *testing.T) {
		t.Parallel()
		subscribe := func(user string) *wsConn {
			w, _ := connectRaw(t, addr, token(t, user, nil, nil, 0))
			w.write(textFrame(`{"id":2,"subscribe":{"channel":"vip","token":"` + subTokenExpiring(t, user, "vip", exp) + `"}}`))
			r := decodeReply(t, w.readText())
			if r.Subscribe == nil || !r.Subscribe.Expires || r.Subscribe.TTL == 0 || r.Subscribe.TTL > 2 {
				t.Fatalf("subscribe reply without expiry: %+v", r)
			}
			return w
		}
		late, fresh := subscribe("sublate"), subscribe("subfresh")
		fresh.write(textFrame(`{"id":3,"sub_refresh":{"channel":"vip","token":"` + subToken(t, "subfresh", "vip") + `"}}`))
		if r := decodeReply(t, fresh.readText()); r.ID != 3 || r.SubRefresh == nil || !r.SubRefresh.Expires || r.SubRefresh.TTL < 3000 {
			t.Fatalf("sub_refresh reply %+v", r)
		}
		fresh.write(textFrame(`{"id":4,"sub_refresh":{"channel":"nope","token":"` + subToken(t, "subfresh", "nope") + `"}}`))
		if r := decodeReply(t, fresh.readText()); r.ID != 4 || r.Error == nil || r.Error.Code != 103 {
			t.Fatalf("sub_refresh of a channel not subscribed: %+v", r)
		}
		late.expectClose(3006)
		closedInTime(t, exp)
		fresh.write(textFrame(`{"id":5,"ping":{}}`))
		if r := decodeReply(t, fresh.readText()); r.ID != 5 {
			t.Fatalf("refreshed subscription: %+v", r)
		}
	})
}

func TestConnLimit(t *testing.T) {
	for _, tt := range []struct {
		max    int
		nofile uint64
		want   int
	}{
		{0, 20_000, 19_000},                // 5% reserve
		{0, 1 << 20, 1<<20 - 4096},         // reserve capped
		{0, 1024, 1024 - 256},              // reserve at least 256
		{0, 100, 1},                        // nothing left: still one
		{5, 20_000, 5},                     // configured
		{50_000, 20_000, 19_000},           // configured above the file limit: lowered
		{0, math.MaxUint64, math.MaxInt32}, // RLIM_INFINITY
	} {
		if got := (Config{MaxConnections: tt.max}).ConnLimit(tt.nofile); got != tt.want {
			t.Errorf("ConnLimit(max %d, nofile %d) = %d, want %d", tt.max, tt.nofile, got, tt.want)
		}
	}
}

// A relay at MaxConnections answers a new connection with 503 and closes
// it; the open ones are unaffected, and a slot freed is usable again.
// Without the limit, a relay whose file table fills up stops altogether:
// gnet treats EMFILE from accept(2) as fatal.
func TestConnectionLimit(t *testing.T) {
	srv := startRelay(t, func(c *Config) { c.MaxConnections = 3 })
	open := make([]*wsConn, 3)
	for i := range open {
		open[i] = dialWS(t, srv.Addr())
	}
	over := dialRaw(t, srv.Addr())
	over.write([]byte(upgradeRequest))
	if head := over.readHTTPHead(); !strings.HasPrefix(head, "HTTP/1.1 503") || !strings.Contains(head, "Retry-After: 5") {
		t.Fatalf("over the limit: got %q, want 503 with Retry-After", head)
	}
	var d dto.Metric
	if err := srv.m.refused.WithLabelValues("limit").Write(&d); err != nil || d.GetCounter().GetValue() != 1 {
		t.Fatalf("refused{limit} = %v (%v), want 1", d.GetCounter().GetValue(), err)
	}
	for i, w := range open {
		w.write(frame(opPing, []byte{byte('a' + i)}, true, true))
		if op, p := w.readFrame(); op != opPong || string(p) != string(rune('a'+i)) {
			t.Fatalf("connection %d after the refusal: got op %d %q, want its pong", i, op, p)
		}
	}
	_ = open[0].c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for srv.open.Load() > 2 {
		if time.Now().After(deadline) {
			t.Fatal("closed connection still counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	dialWS(t, srv.Addr()) // the freed slot
}
