package clustertest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// api calls the server API method on the cluster's management and decodes
// the whole answer into out; it fails the test on an error answer.
func (c *cluster) api(t *testing.T, method string, params any, out any) {
	t.Helper()
	body, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, c.apiBase+"/api/"+method, bytes.NewReader(body))
	req.Header.Set("Authorization", "apikey "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var raw struct {
		Error *struct {
			Code    int
			Message string
		} `json:"error"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil || resp.StatusCode != 200 || raw.Error != nil {
		t.Fatalf("%s %s: HTTP %d, error %+v, decode %v", method, body, resp.StatusCode, raw.Error, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw.Result, out); err != nil {
			t.Fatalf("%s result %s: %v", method, raw.Result, err)
		}
	}
}

// TestServerAPIAcrossRelays: the server API of the management process
// reaches both relays (real processes): presence and presence_stats count
// the members on both, channels sums their subscribers, info lists both
// relays and both controllers, publish reaches subscribers on both with
// the next seq, and unsubscribe and disconnect of a user whose connections
// sit on different relays take effect on each of them.
func TestServerAPIAcrossRelays(t *testing.T) {
	c := startCluster(t)
	const ch = "chat:api"
	ann := newPresenceClient(t, c.relayWS[0], "ann", ch)
	bob := newPresenceClient(t, c.relayWS[1], "bob", ch)
	eve1 := newPresenceClient(t, c.relayWS[0], "eve", ch)
	eve2 := newPresenceClient(t, c.relayWS[1], "eve", ch)

	var pres struct {
		Presence map[string]struct{ Client, User string } `json:"presence"`
	}
	waitFor(t, 10*time.Second, "API presence of 4 clients on 2 relays", func() bool {
		c.api(t, "presence", map[string]any{"channel": ch}, &pres)
		return len(pres.Presence) == 4
	})
	for _, pc := range []*presenceClient{ann, bob, eve1, eve2} {
		if m, ok := pres.Presence[pc.id]; !ok || m.User != pc.name {
			t.Fatalf("presence %+v lacks %s (%s)", pres.Presence, pc.name, pc.id)
		}
	}
	var stats struct {
		NumClients int `json:"num_clients"`
		NumUsers   int `json:"num_users"`
	}
	c.api(t, "presence_stats", map[string]any{"channel": ch}, &stats)
	if stats.NumClients != 4 || stats.NumUsers != 3 {
		t.Fatalf("presence_stats %+v, want 4 clients, 3 users", stats)
	}
	var chans struct {
		Channels map[string]struct {
			NumClients int `json:"num_clients"`
		} `json:"channels"`
	}
	c.api(t, "channels", map[string]any{"pattern": "chat:*"}, &chans)
	if got := chans.Channels[ch].NumClients; got != 4 || len(chans.Channels) != 1 {
		t.Fatalf("channels %+v, want %s with 4 subscribers", chans.Channels, ch)
	}
	var info struct {
		Nodes []struct {
			Name string `json:"name"`
		} `json:"nodes"`
	}
	c.api(t, "info", map[string]any{}, &info)
	var names []string
	for _, n := range info.Nodes {
		names = append(names, n.Name)
	}
	for _, want := range []string{"relay-1", "relay-2", "controller-1", "controller-2"} {
		if !slices.Contains(names, want) {
			t.Fatalf("info nodes %v lack %s", names, want)
		}
	}

	// publish: every subscriber on both relays gets it with seq 1.
	var pub struct {
		Offset uint64 `json:"offset"`
		Epoch  string `json:"epoch"`
	}
	c.api(t, "publish", map[string]any{"channel": ch, "data": map[string]string{"text": "from the backend"}}, &pub)
	if pub.Offset != 1 || pub.Epoch == "" {
		t.Fatalf("publish answered %+v, want offset 1 and an epoch", pub)
	}
	for _, pc := range []*presenceClient{ann, bob, eve1, eve2} {
		waitFor(t, 10*time.Second, pc.name+" gets the API publication", func() bool {
			return pc.saw(`pub:1:{"text":"from the backend"}`)
		})
	}

	// unsubscribe eve: both of her subscriptions end, on both relays.
	c.api(t, "unsubscribe", map[string]any{"channel": ch, "user": "eve"}, nil)
	for _, pc := range []*presenceClient{eve1, eve2} {
		waitFor(t, 10*time.Second, "eve unsubscribed on "+pc.id, func() bool { return pc.saw("unsubscribed:2000") })
	}
	waitMembers(t, ann, 10*time.Second, "ann,bob")
	if ann.saw("unsubscribed:2000") || bob.saw("unsubscribed:2000") {
		t.Fatal("unsubscribe of eve reached another user")
	}

	// disconnect eve (a terminal code: the SDK does not reconnect).
	c.api(t, "disconnect", map[string]any{"user": "eve", "disconnect": map[string]any{"code": 4503, "reason": "banned"}}, nil)
	for _, pc := range []*presenceClient{eve1, eve2} {
		waitFor(t, 10*time.Second, "eve disconnected on "+pc.id, func() bool { return pc.saw("disconnected:4503") })
	}
	for _, pc := range []*presenceClient{ann, bob} {
		if slices.ContainsFunc(pc.events, func(e string) bool { return strings.HasPrefix(e, "disconnected:") }) {
			t.Fatalf("%s was disconnected too: %v", pc.name, pc.events)
		}
	}
}
