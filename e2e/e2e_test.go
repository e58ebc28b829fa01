// Package e2e runs the whole of Herald in one process on the embedded
// engines (kfake, SQLite, versitygw) and drives it like users do: the
// official centrifuge-go SDK over WebSocket, the REST history API and the
// cacher's archive trigger. Every hop is on the path: a break anywhere fails
// these tests.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/centrifugal/centrifuge-go"

	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/devstack/devstacktest"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/testutil"
)

const chunkSize = 4

func startStack(t *testing.T) *devstack.Stack {
	t.Helper()
	return devstacktest.Start(t, func(o *devstack.Options) {
		o.TokenSecret = "e2e-secret"
		o.ChunkSize, o.MinAge = chunkSize, 0
		o.Interval = time.Hour // only the explicit trigger archives
	})
}

func token(t testing.TB, secret, user string, channels ...string) string {
	t.Helper()
	tok, err := auth.Sign(secret, auth.NewClaims(user, channels, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// received collects the publications a client got, per channel.
type received struct {
	mu   sync.Mutex
	pubs map[string][]centrifuge.Publication
	cond *sync.Cond
}

func newReceived() *received {
	r := &received{pubs: map[string][]centrifuge.Publication{}}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *received) add(ch string, p centrifuge.Publication) {
	r.mu.Lock()
	r.pubs[ch] = append(r.pubs[ch], p)
	r.mu.Unlock()
	r.cond.Broadcast()
}

// waitFor waits until n publications of ch arrived or the timeout passes.
func (r *received) waitFor(ch string, n int, timeout time.Duration) []centrifuge.Publication {
	deadline := time.AfterFunc(timeout, r.cond.Broadcast)
	defer deadline.Stop()
	end := time.Now().Add(timeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.pubs[ch]) < n && time.Now().Before(end) {
		r.cond.Wait()
	}
	return append([]centrifuge.Publication(nil), r.pubs[ch]...)
}

// connectClient connects a centrifuge-go client whose token subscribes it to
// channels server-side, and waits until those subscriptions are active.
func connectClient(t *testing.T, st *devstack.Stack, user string, channels ...string) (*centrifuge.Client, *received) {
	t.Helper()
	c := centrifuge.NewJsonClient(st.RelayURL, centrifuge.Config{Token: token(t, st.TokenSecret, user, channels...)})
	rec := newReceived()
	subscribed := make(chan string, len(channels))
	c.OnPublication(func(e centrifuge.ServerPublicationEvent) { rec.add(e.Channel, e.Publication) })
	c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) { subscribed <- e.Channel })
	c.OnError(func(e centrifuge.ErrorEvent) { t.Logf("%s: client error: %v", user, e.Error) })
	if err := c.Connect(); err != nil {
		t.Fatalf("%s: connect: %v", user, err)
	}
	t.Cleanup(c.Close)
	for range channels {
		select {
		case <-subscribed:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: server-side subscriptions not active after 15s (state %v)", user, c.State())
		}
	}
	return c, rec
}

// checkSeqs asserts pubs carry offsets 1..n in order with the expected data.
func checkSeqs(t *testing.T, who string, pubs []centrifuge.Publication, n int) {
	t.Helper()
	if len(pubs) != n {
		t.Fatalf("%s received %d publications, want %d", who, len(pubs), n)
	}
	for i, p := range pubs {
		if p.Offset != uint64(i+1) {
			t.Fatalf("%s: publication %d has offset %d, want %d (gap, duplicate or reorder)", who, i, p.Offset, i+1)
		}
		if want := msgData(i + 1); string(p.Data) != want {
			t.Fatalf("%s: publication %d data %s, want %s", who, i+1, p.Data, want)
		}
	}
}

func msgData(i int) string { return fmt.Sprintf(`{"text":"hello %d","n":%d}`, i, i) }

type historyPage struct {
	Messages []struct {
		ID          string          `json:"id"`
		Channel     string          `json:"channel"`
		Seq         uint64          `json:"seq"`
		Sender      string          `json:"sender"`
		Info        json.RawMessage `json:"info"`
		Data        json.RawMessage `json:"data"`
		PublishedAt time.Time       `json:"published_at"`
	} `json:"messages"`
	NextCursor string `json:"next_cursor"`
}

// walkHistory pages through a channel's whole history with the cursor and
// returns the seqs in the order served.
func walkHistory(t *testing.T, st *devstack.Stack, bearer, channel, order string, limit int) []uint64 {
	t.Helper()
	var seqs []uint64
	cursor := ""
	for page := 0; page < 1000; page++ {
		q := url.Values{"limit": {fmt.Sprint(limit)}, "order": {order}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var p historyPage
		u := st.ManagementURL + "/v1/channels/" + url.PathEscape(channel) + "/messages?" + q.Encode()
		code := getJSON(t, u, bearer, &p)
		if code == http.StatusNotFound && page == 0 {
			// "channel not found": nothing of it persisted yet (the batch
			// writer runs behind live delivery); the callers poll.
			return nil
		}
		if code != http.StatusOK {
			t.Fatalf("GET %s: status %d", u, code)
		}
		for _, m := range p.Messages {
			if want := msgData(int(m.Seq)); string(m.Data) != want {
				t.Fatalf("history seq %d: data %s, want %s", m.Seq, m.Data, want)
			}
			if m.Channel != channel || m.Sender != "alice" || m.ID == "" || m.PublishedAt.IsZero() {
				t.Fatalf("history seq %d: bad fields %+v", m.Seq, m)
			}
			seqs = append(seqs, m.Seq)
		}
		if p.NextCursor == "" {
			return seqs
		}
		cursor = p.NextCursor
	}
	t.Fatal("history did not end after 1000 pages")
	return nil
}

func wantSeqs(t *testing.T, what string, got []uint64, n int, asc bool) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%s: %d messages %v, want %d", what, len(got), got, n)
	}
	for i, s := range got {
		want := uint64(i + 1)
		if !asc {
			want = uint64(n - i)
		}
		if s != want {
			t.Fatalf("%s: position %d has seq %d, want %d (all: %v)", what, i, s, want, got)
		}
	}
}

func TestMessagesTravelEveryHop(t *testing.T) {
	st := startStack(t)
	const channel = "chat:e2e"
	const n = 22 // five full chunks of 4 and a partial one

	alice, aliceRec := connectClient(t, st, "alice", channel)
	_, bobRec := connectClient(t, st, "bob", channel)
	_, carolRec := connectClient(t, st, "carol", channel)

	// Publish: each call returns after Kafka acknowledged the record.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 1; i <= n; i++ {
		if _, err := alice.Publish(ctx, channel, []byte(msgData(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	// Live delivery: relay → Kafka → controller → relay → every subscriber,
	// sender included, with dense seqs in publish order.
	checkSeqs(t, "bob", bobRec.waitFor(channel, n, 20*time.Second), n)
	checkSeqs(t, "carol", carolRec.waitFor(channel, n, 20*time.Second), n)
	checkSeqs(t, "alice", aliceRec.waitFor(channel, n, 20*time.Second), n)

	// History through management: persistence is asynchronous, so wait for
	// the controller's batch writer to catch up.
	bearer := token(t, st.TokenSecret, "bob", channel)
	deadline := time.Now().Add(20 * time.Second)
	for {
		seqs := walkHistory(t, st, bearer, channel, "asc", 1000)
		if len(seqs) == n || time.Now().After(deadline) {
			wantSeqs(t, "history before archive", seqs, n, true)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The same history through the relay (SDK history command): the relay
	// asks management with a grant it signs for alice and this channel.
	res, err := alice.History(ctx, channel, centrifuge.WithHistoryLimit(100))
	if err != nil {
		t.Fatalf("history through the relay: %v", err)
	}
	checkSeqs(t, "alice's history through the relay", res.Publications, n)

	// Authorization: no token → 401; a token without the channel → 403.
	hist := st.ManagementURL + "/v1/channels/" + url.PathEscape(channel) + "/messages"
	if code := getJSON(t, hist, "", nil); code != http.StatusUnauthorized {
		t.Errorf("history without token: status %d, want 401", code)
	}
	if code := getJSON(t, hist, token(t, st.TokenSecret, "eve", "chat:other"), nil); code != http.StatusForbidden {
		t.Errorf("history with a foreign token: status %d, want 403", code)
	}

	// Archive: every full chunk (seqs 1..20) moves to S3 and leaves the store.
	runArchive(t, st)
	var ch struct {
		LastSeq         uint64 `json:"last_seq"`
		ArchivedThrough uint64 `json:"archived_through"`
	}
	if code := getJSON(t, st.ManagementURL+"/v1/channels/"+url.PathEscape(channel), bearer, &ch); code != http.StatusOK {
		t.Fatalf("channel info: status %d", code)
	}
	if ch.ArchivedThrough != 20 || ch.LastSeq != n {
		t.Fatalf("after archive: archived_through=%d last_seq=%d, want 20 and %d", ch.ArchivedThrough, ch.LastSeq, n)
	}
	left, err := st.Store.Messages(context.Background(), store.Range{Channel: channel, From: 1, To: n})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != n-20 || left[0].Seq != 21 {
		t.Fatalf("store after archive holds %d messages (first %v), want only seqs 21..%d", len(left), left, n)
	}

	// History across the S3/store boundary, in both orders, with page sizes
	// that split chunks and straddle the boundary.
	for _, limit := range []int{1, 3, 5, 1000} {
		wantSeqs(t, fmt.Sprintf("asc history, limit %d", limit), walkHistory(t, st, bearer, channel, "asc", limit), n, true)
		wantSeqs(t, fmt.Sprintf("desc history, limit %d", limit), walkHistory(t, st, bearer, channel, "desc", limit), n, false)
	}
}

func runArchive(t *testing.T, st *devstack.Stack) {
	testutil.RunArchive(t, st.CacherURL, 60*time.Second)
}

var getJSON = testutil.GetJSON
