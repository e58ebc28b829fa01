package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/herald-chat/herald/assembly"
	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/devstack/devstacktest"
	"github.com/herald-chat/herald/internal/auth"
)

// apiCall posts params to POST /api/{method} with key (none when empty)
// and decodes the answer into out; it returns the HTTP status.
func apiCall(t testing.TB, base, key, method string, params any, out any) int {
	t.Helper()
	var body []byte
	switch p := params.(type) {
	case []byte:
		body = p
	case string:
		body = []byte(p)
	default:
		var err error
		if body, err = json.Marshal(params); err != nil {
			t.Fatal(err)
		}
	}
	path := "/api"
	if method != "" {
		path += "/" + method
	}
	req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "apikey "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: answer %q is not JSON: %v", method, b, err)
		}
	}
	return resp.StatusCode
}

type apiErr struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type publishReply struct {
	Result *struct {
		Offset uint64 `json:"offset"`
		Epoch  string `json:"epoch"`
	} `json:"result"`
	Error *apiErr `json:"error"`
}

// apiPublish publishes through the server API and returns the result.
func apiPublish(t testing.TB, base, key, channel, data, idem string) (uint64, string) {
	t.Helper()
	var r publishReply
	params := map[string]any{"channel": channel, "data": json.RawMessage(data)}
	if idem != "" {
		params["idempotency_key"] = idem
	}
	if code := apiCall(t, base, key, "publish", params, &r); code != http.StatusOK || r.Error != nil || r.Result == nil {
		t.Fatalf("publish to %s: HTTP %d, error %+v", channel, code, r.Error)
	}
	return r.Result.Offset, r.Result.Epoch
}

// TestServerAPIPublish: a server API publish reaches centrifuge-go
// subscribers with the channel's next seq (after a client's publish too)
// and is in history (server API history and the REST history).
func TestServerAPIPublish(t *testing.T) {
	st := startStack(t)
	const ch = "chat:api"
	c, rec := connectClient(t, st, "alice", ch)
	for i := 1; i <= 3; i++ {
		off, epoch := apiPublish(t, st.ManagementURL, "", ch, msgData(i), "")
		if off != uint64(i) || epoch == "" {
			t.Fatalf("publish %d: offset %d epoch %q, want offset %d and an epoch", i, off, epoch, i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, ch, []byte(msgData(4))); err != nil {
		t.Fatal(err)
	}
	if off, _ := apiPublish(t, st.ManagementURL, "", ch, msgData(5), ""); off != 5 {
		t.Fatalf("publish after a client's: offset %d, want 5", off)
	}
	checkSeqs(t, "alice", rec.waitFor(ch, 5, 10*time.Second), 5)

	var h struct {
		Result struct {
			Publications []struct {
				Data   json.RawMessage `json:"data"`
				Offset uint64          `json:"offset"`
			} `json:"publications"`
			Offset uint64 `json:"offset"`
			Epoch  string `json:"epoch"`
		} `json:"result"`
		Error *apiErr `json:"error"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		apiCall(t, st.ManagementURL, "", "history", map[string]any{"channel": ch, "limit": 10}, &h)
		if len(h.Result.Publications) == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // persistence lags the ack by a batch
	}
	if h.Error != nil || len(h.Result.Publications) != 5 || h.Result.Offset != 5 || h.Result.Epoch == "" {
		t.Fatalf("history: %+v", h)
	}
	for i, p := range h.Result.Publications {
		if p.Offset != uint64(i+1) || string(p.Data) != msgData(i+1) {
			t.Fatalf("history publication %d: offset %d data %s", i, p.Offset, p.Data)
		}
	}
	apiCall(t, st.ManagementURL, "", "history", map[string]any{"channel": ch, "limit": 2, "reverse": true, "since": map[string]any{"offset": 1, "epoch": h.Result.Epoch}}, &h)
	if len(h.Result.Publications) != 2 || h.Result.Publications[0].Offset != 5 {
		t.Fatalf("history reverse since 1 limit 2: %+v", h.Result.Publications)
	}
}

// TestServerAPIIdempotentPublish: a publish retried three times with one
// idempotency_key is stored once and every retry answers its seq, also
// after the whole stack (controller included) restarted between retries.
func TestServerAPIIdempotentPublish(t *testing.T) {
	dir := t.TempDir()
	const ch = "chat:idem"
	start := func() *devstack.Stack {
		o := devstack.Ephemeral(dir)
		o.TokenSecret, o.Interval = "e2e-secret", time.Hour
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		st, err := devstack.Start(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := start()
	if off, _ := apiPublish(t, st.ManagementURL, "", ch, msgData(1), ""); off != 1 {
		t.Fatalf("first publish: offset %d", off)
	}
	for i := range 3 {
		if off, _ := apiPublish(t, st.ManagementURL, "", ch, msgData(2), "order-42"); off != 2 {
			t.Fatalf("idempotent publish, try %d: offset %d, want 2", i+1, off)
		}
	}
	if off, _ := apiPublish(t, st.ManagementURL, "", ch, msgData(3), "order-43"); off != 3 {
		t.Fatalf("publish with another key: offset %d, want 3", off)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = start() // a new controller: its window is rebuilt from the store
	defer st.Close()
	if off, _ := apiPublish(t, st.ManagementURL, "", ch, msgData(2), "order-42"); off != 2 {
		t.Fatalf("idempotent publish after a restart: offset %d, want 2", off)
	}
	if off, _ := apiPublish(t, st.ManagementURL, "", ch, msgData(4), ""); off != 4 {
		t.Fatalf("publish after the restart: offset %d, want 4", off)
	}
	var h struct {
		Result struct {
			Publications []struct {
				Offset uint64 `json:"offset"`
			} `json:"publications"`
		} `json:"result"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		apiCall(t, st.ManagementURL, "", "history", map[string]any{"channel": ch, "limit": 100}, &h)
		if len(h.Result.Publications) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(h.Result.Publications) != 4 {
		t.Fatalf("history has %d publications, want 4 (a retry stored twice?): %+v", len(h.Result.Publications), h.Result.Publications)
	}
	for i, p := range h.Result.Publications {
		if p.Offset != uint64(i+1) {
			t.Fatalf("history %+v", h.Result.Publications)
		}
	}
}

// TestServerAPIBroadcast: one broadcast to 100 channels gives each its own
// result, and a subscriber of all of them gets every publication.
func TestServerAPIBroadcast(t *testing.T) {
	st := startStack(t)
	chans := make([]string, 100)
	for i := range chans {
		chans[i] = fmt.Sprintf("room:%d", i)
	}
	_, rec := connectClient(t, st, "bob", chans...)
	var r struct {
		Result struct {
			Responses []publishReply `json:"responses"`
		} `json:"result"`
		Error *apiErr `json:"error"`
	}
	bad := append(append([]string{}, chans...), "")
	if code := apiCall(t, st.ManagementURL, "", "broadcast", map[string]any{"channels": bad, "data": json.RawMessage(msgData(1))}, &r); code != 200 || r.Error != nil {
		t.Fatalf("broadcast: HTTP %d %+v", code, r.Error)
	}
	if len(r.Result.Responses) != 101 {
		t.Fatalf("broadcast: %d responses, want 101", len(r.Result.Responses))
	}
	for i, resp := range r.Result.Responses[:100] {
		if resp.Error != nil || resp.Result == nil || resp.Result.Offset != 1 {
			t.Fatalf("broadcast response %d: %+v %+v", i, resp.Result, resp.Error)
		}
	}
	if e := r.Result.Responses[100].Error; e == nil || e.Code != 107 {
		t.Fatalf("broadcast to an empty channel name: %+v, want error 107", e)
	}
	for _, ch := range chans {
		checkSeqs(t, "bob "+ch, rec.waitFor(ch, 1, 10*time.Second), 1)
	}
}

// TestServerAPICommands: channels and info see the clients; disconnect
// and unsubscribe act on them as the SDK understands.
func TestServerAPICommands(t *testing.T) {
	st := startStack(t)
	carol, _ := connectClient(t, st, "carol", "chat:x", "chat:y")
	_, _ = connectClient(t, st, "dave", "chat:x")

	var chs struct {
		Result struct {
			Channels map[string]struct {
				NumClients int `json:"num_clients"`
			} `json:"channels"`
		} `json:"result"`
	}
	// channelsUntil asks the server API for the channels until ok accepts
	// the clients per channel or 5 s pass, and returns the last answer: a
	// relay updates its counts just after the client has read its
	// subscribe, unsubscribe or disconnect frame, not before.
	channelsUntil := func(params map[string]any, ok func(clients map[string]int) bool) map[string]int {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			chs.Result.Channels = nil
			apiCall(t, st.ManagementURL, "", "channels", params, &chs)
			got := map[string]int{}
			for name, c := range chs.Result.Channels {
				got[name] = c.NumClients
			}
			if ok(got) || time.Now().After(deadline) {
				return got
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if got := channelsUntil(map[string]any{"pattern": "chat:*"}, func(c map[string]int) bool {
		return len(c) == 2 && c["chat:x"] == 2 && c["chat:y"] == 1
	}); len(got) != 2 || got["chat:x"] != 2 || got["chat:y"] != 1 {
		t.Fatalf("channels chat:*: %+v", got)
	}
	if got := channelsUntil(map[string]any{"pattern": "chat:y"}, func(c map[string]int) bool { return len(c) == 1 }); len(got) != 1 {
		t.Fatalf("channels chat:y: %+v", got)
	}

	var info struct {
		Result struct {
			Nodes []struct {
				UID        string `json:"uid"`
				Kind       string `json:"kind"`
				NumClients int    `json:"num_clients"`
				NumSubs    int    `json:"num_subs"`
				Uptime     int64  `json:"uptime"`
			} `json:"nodes"`
		} `json:"result"`
	}
	apiCall(t, st.ManagementURL, "", "info", map[string]any{}, &info)
	kinds := map[string]int{}
	for _, n := range info.Result.Nodes {
		kinds[n.Kind]++
		if n.Kind == "relay" && (n.NumClients != 2 || n.NumSubs != 3) {
			t.Fatalf("relay node %+v, want 2 clients, 3 subscriptions", n)
		}
	}
	if kinds["relay"] != 1 || kinds["controller"] != 1 {
		t.Fatalf("info nodes %+v", info.Result.Nodes)
	}

	// unsubscribe: carol leaves chat:y (server unsubscribe push).
	unsub := make(chan centrifuge.ServerUnsubscribedEvent, 1)
	carol.OnUnsubscribed(func(e centrifuge.ServerUnsubscribedEvent) { unsub <- e })
	var empty struct {
		Result *struct{} `json:"result"`
		Error  *apiErr   `json:"error"`
	}
	if apiCall(t, st.ManagementURL, "", "unsubscribe", map[string]any{"user": "carol", "channel": "chat:y"}, &empty); empty.Error != nil || empty.Result == nil {
		t.Fatalf("unsubscribe: %+v", empty.Error)
	}
	select {
	case e := <-unsub:
		if e.Channel != "chat:y" {
			t.Fatalf("unsubscribed from %s", e.Channel)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("carol was not unsubscribed")
	}
	if got := channelsUntil(map[string]any{}, func(c map[string]int) bool { _, ok := c["chat:y"]; return !ok }); got["chat:y"] > 0 || len(got) != 1 {
		t.Fatalf("chat:y still has subscribers: %+v", got)
	}

	// disconnect: carol with a terminal code of her own.
	disc := make(chan centrifuge.DisconnectedEvent, 1)
	carol.OnDisconnected(func(e centrifuge.DisconnectedEvent) { disc <- e })
	if apiCall(t, st.ManagementURL, "", "disconnect", map[string]any{"user": "carol", "disconnect": map[string]any{"code": 4501, "reason": "kicked"}}, &empty); empty.Error != nil {
		t.Fatalf("disconnect: %+v", empty.Error)
	}
	select {
	case e := <-disc:
		if e.Code != 4501 || e.Reason != "kicked" {
			t.Fatalf("disconnected with %d %q, want 4501 kicked", e.Code, e.Reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("carol was not disconnected")
	}
	if got := channelsUntil(map[string]any{}, func(c map[string]int) bool { return len(c) == 1 && c["chat:x"] == 1 }); len(got) != 1 || got["chat:x"] != 1 {
		t.Fatalf("channels after the disconnect: %+v", got)
	}
}

// TestServerAPIClientSideUnsubscribe: a client-side subscription (caps
// grant) is removed by the server API's unsubscribe too.
func TestServerAPIClientSideUnsubscribe(t *testing.T) {
	st := startStack(t)
	claims := auth.NewClaims("erin", nil, time.Hour)
	claims.Caps = []auth.Capability{{Channels: []string{"news:*"}, Match: "wildcard", Allow: []string{auth.AllowSubscribe}}}
	tok, err := auth.Sign(st.TokenSecret, claims)
	if err != nil {
		t.Fatal(err)
	}
	c := centrifuge.NewJsonClient(st.RelayURL, centrifuge.Config{Token: tok})
	t.Cleanup(c.Close)
	if err := c.Connect(); err != nil {
		t.Fatal(err)
	}
	sub, err := c.NewSubscription("news:today")
	if err != nil {
		t.Fatal(err)
	}
	subscribed, unsubscribed := make(chan struct{}, 1), make(chan centrifuge.UnsubscribedEvent, 1)
	sub.OnSubscribed(func(centrifuge.SubscribedEvent) { subscribed <- struct{}{} })
	sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) { unsubscribed <- e })
	if err := sub.Subscribe(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("not subscribed")
	}
	var r struct {
		Error *apiErr `json:"error"`
	}
	apiCall(t, st.ManagementURL, "", "unsubscribe", map[string]any{"user": "erin", "channel": "news:today"}, &r)
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	select {
	case e := <-unsubscribed:
		if e.Code != 2000 {
			t.Fatalf("unsubscribed with code %d, want 2000 (server unsubscribe)", e.Code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not unsubscribed")
	}
}

// TestServerAPIBadInput: every method's bad inputs get the documented
// error object and HTTP status, never a 500.
func TestServerAPIBadInput(t *testing.T) {
	const key = "e2e-api-key"
	st := devstackStartWithKey(t, key)
	base := st.ManagementURL
	big := `"` + strings.Repeat("x", 70<<10) + `"`
	cases := []struct {
		name, key, method string
		body              any
		status, code      int
	}{
		{"missing key", "", "info", `{}`, 401, 101},
		{"wrong key", "nope", "info", `{}`, 401, 101},
		{"unknown method", key, "nope", `{}`, 404, 104},
		{"unknown method in body", key, "", `{"method":"nope","params":{}}`, 404, 104},
		{"no method in body", key, "", `{"params":{}}`, 400, 107},
		{"bad JSON", key, "publish", `{"channel":`, 400, 107},
		{"bad JSON in body form", key, "", `{"method":"publish"`, 400, 107},
		{"params not an object", key, "publish", `[1]`, 400, 107},
		{"oversize body", key, "publish", `{"channel":"a","data":"` + strings.Repeat("x", 2<<20) + `"}`, 413, 107},
	}
	for _, m := range []string{"publish", "presence", "presence_stats", "history", "unsubscribe"} {
		cases = append(cases, struct {
			name, key, method string
			body              any
			status, code      int
		}{m + " missing channel", key, m, `{"user":"u","data":{}}`, 200, 107})
	}
	more := []struct {
		name, key, method string
		body              any
		status, code      int
	}{
		{"publish oversize data", key, "publish", `{"channel":"a","data":` + big + `}`, 200, 107},
		{"publish no data", key, "publish", `{"channel":"a"}`, 200, 107},
		{"publish b64data", key, "publish", `{"channel":"a","b64data":"eA=="}`, 200, 107},
		{"publish channel of wrong type", key, "publish", `{"channel":5,"data":{}}`, 200, 107},
		{"broadcast no channels", key, "broadcast", `{"data":{}}`, 200, 107},
		{"broadcast oversize data", key, "broadcast", `{"channels":["a"],"data":` + big + `}`, 200, 107},
		{"disconnect no user", key, "disconnect", `{}`, 200, 107},
		{"disconnect bad code", key, "disconnect", `{"user":"u","disconnect":{"code":1000}}`, 200, 107},
		{"unsubscribe no user", key, "unsubscribe", `{"channel":"a"}`, 200, 107},
		{"history negative limit", key, "history", `{"channel":"a","limit":-1}`, 200, 107},
		{"history bad cursor", key, "history", `{"channel":"a","limit":1,"cursor":"!!"}`, 200, 107},
		{"presence not available", key, "presence", `{"channel":"a"}`, 200, 108},
		{"presence_stats not available", key, "presence_stats", `{"channel":"a"}`, 200, 108},
	}
	cases = append(cases, more...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r struct {
				Result json.RawMessage `json:"result"`
				Error  *apiErr         `json:"error"`
			}
			status := apiCall(t, base, tc.key, tc.method, tc.body, &r)
			if status != tc.status || r.Error == nil || r.Error.Code != tc.code || r.Error.Message == "" {
				t.Fatalf("HTTP %d %+v, want HTTP %d with error code %d", status, r.Error, tc.status, tc.code)
			}
		})
	}
	t.Run("X-API-Key", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/channels", strings.NewReader(`{}`))
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("HTTP %d", resp.StatusCode)
		}
	})
	t.Run("body form", func(t *testing.T) {
		var r publishReply
		if code := apiCall(t, base, key, "", `{"method":"publish","params":{"channel":"a","data":{"x":1}}}`, &r); code != 200 || r.Result == nil || r.Result.Offset != 1 {
			t.Fatalf("HTTP %d %+v %+v", code, r.Result, r.Error)
		}
	})
}

// devstackStartWithKey starts a stack whose server API needs key.
func devstackStartWithKey(t *testing.T, key string) *devstack.Stack {
	t.Helper()
	o := devstack.Ephemeral(t.TempDir())
	o.TokenSecret = "e2e-secret"
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o.Services = assembly.NewSet()
	o.Services.Management.Config.APIKey = key
	ctx, cancel := context.WithCancel(context.Background())
	st, err := devstack.Start(ctx, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := st.Wait(); err != nil {
			t.Errorf("stack: %v", err)
		}
	})
	return st
}

// BenchmarkServerAPIPublish: one server API publish after another (Kafka
// ack plus the owner's seq), reporting p50/p99 latency.
func BenchmarkServerAPIPublish(b *testing.B) {
	st := devstacktest.Start(b, func(o *devstack.Options) { o.TokenSecret = "e2e-secret" })
	body := []byte(`{"channel":"bench:api","data":{"text":"hello"}}`)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		resp, err := http.Post(st.ManagementURL+"/api/publish", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
