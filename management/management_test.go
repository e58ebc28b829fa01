package management

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/engines/s3local/s3test"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	"github.com/herald-chat/herald/internal/testutil"
	"github.com/herald-chat/herald/internal/testutil/teststore"
)

func TestMain(m *testing.M) { s3test.Main(m) }

const (
	k      = 4
	secret = "management-test-secret"
	room   = "room:1/ü"
)

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func publishedAt(seq uint64) time.Time {
	return base.Add(time.Duration(seq) * 1500 * time.Millisecond)
}

type storeFactory struct {
	name string
	open func(tb testing.TB) store.Store
}

var stores = []storeFactory{
	{"memstore", teststore.Memstore},
	{"sqlite", teststore.SQLite},
}

type env struct {
	st   store.Store
	arc  *archive.Client
	acfg archive.Config
	srv  *Server
	http *httptest.Server
	reg  *prometheus.Registry
}

type envOpts struct {
	st         store.Store
	endpoint   string
	cacheBytes int
}

func newEnv(tb testing.TB, o envOpts) *env {
	tb.Helper()
	e := &env{st: o.st, reg: prometheus.NewRegistry()}
	if e.st == nil {
		e.st = memstore.New()
	}
	e.acfg = archive.Config{
		Endpoint: s3test.Endpoint(), Bucket: s3test.Bucket(tb), AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey,
		ChunkSize: k, MaxRetries: 1, RequestTimeout: 5 * time.Second,
	}
	if o.endpoint != "" {
		e.acfg.Endpoint = o.endpoint
	}
	arc, err := archive.New(context.Background(), e.acfg)
	if err != nil {
		tb.Fatal(err)
	}
	e.arc = arc
	if o.cacheBytes == 0 {
		o.cacheBytes = 1 << 20
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.srv, err = New(Config{Addr: "127.0.0.1:0", CacheBytes: o.cacheBytes}, e.st, arc, auth.NewVerifier(secret), log, e.reg)
	if err != nil {
		tb.Fatal(err)
	}
	e.http = httptest.NewServer(e.srv.Handler())
	tb.Cleanup(e.http.Close)
	return e
}

// seed writes seqs from…to of channel through WriteBatch.
func (e *env) seed(tb testing.TB, channel string, from, to uint64) {
	tb.Helper()
	b := store.Batch{Partition: 0, NextOffset: int64(to) + 1}
	for seq := from; seq <= to; seq++ {
		m := store.Message{
			ID: fmt.Sprintf("id-%d", seq), Channel: channel, Seq: seq, Sender: fmt.Sprintf("user-%d", seq%3),
			Data: []byte(fmt.Sprintf(`{"text":"message %d","n":%d}`, seq, seq)), PublishedAt: publishedAt(seq),
			Partition: 0, Offset: int64(seq),
		}
		if seq%2 == 1 {
			m.Info = []byte(`{"name":"Ann"}`)
		}
		b.Messages = append(b.Messages, m)
	}
	b.Heads = []store.Head{{Channel: channel, Partition: 0, Epoch: "epoch-1", LastSeq: to, Offset: int64(to)}}
	if err := e.st.WriteBatch(context.Background(), b); err != nil {
		tb.Fatal(err)
	}
}

// archiveThrough does what the cacher does for the chunks up to seq
// through (a multiple of k): put, set archived-through, purge.
func archiveThrough(tb testing.TB, st store.Store, arc *archive.Client, channel string, through uint64) {
	tb.Helper()
	ctx := context.Background()
	for n := uint64(0); (n+1)*k <= through; n++ {
		msgs, err := st.Messages(ctx, store.Range{Channel: channel, From: n*k + 1, To: (n + 1) * k})
		if err != nil {
			tb.Fatal(err)
		}
		if len(msgs) == 0 {
			continue // already purged
		}
		if _, err := arc.PutChunk(ctx, channel, n, msgs); err != nil {
			tb.Fatal(err)
		}
	}
	if err := st.SetArchivedThrough(ctx, channel, through); err != nil {
		tb.Fatal(err)
	}
	if _, err := st.Purge(ctx, channel, through); err != nil {
		tb.Fatal(err)
	}
}

func token(tb testing.TB, mutate func(c *auth.Claims)) string {
	tb.Helper()
	c := auth.NewClaims("alice", []string{room}, time.Hour)
	if mutate != nil {
		mutate(c)
	}
	s, err := auth.Sign(secret, c)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

// get requests path with token tok ("" = none; a value without a dot is
// sent as is) and checks the response against openapi.json.
func (e *env) get(tb testing.TB, path, tok string) response {
	tb.Helper()
	return e.getWith(tb, path, tok, nil)
}

func (e *env) getWith(tb testing.TB, path, tok string, hdr http.Header) response {
	tb.Helper()
	r := e.do(tb, path, tok, hdr)
	p, _, _ := strings.Cut(path, "?")
	doc(tb).check(tb, "GET", p, r)
	return r
}

func (e *env) do(tb testing.TB, path, tok string, hdr http.Header) response {
	tb.Helper()
	resp, body := testutil.Do(tb, http.MethodGet, e.http.URL+path, tok, hdr)
	return response{resp.StatusCode, resp.Header, body}
}

func messagesPath(channel string, q url.Values) string {
	p := "/v1/channels/" + url.PathEscape(channel) + "/messages"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

type pageResp struct {
	Messages []struct {
		ID          string          `json:"id"`
		Channel     string          `json:"channel"`
		Seq         uint64          `json:"seq"`
		Sender      string          `json:"sender"`
		Info        json.RawMessage `json:"info"`
		Data        json.RawMessage `json:"data"`
		PublishedAt string          `json:"published_at"`
	} `json:"messages"`
	NextCursor string `json:"next_cursor"`
}

func (e *env) page(tb testing.TB, channel string, q url.Values) pageResp {
	tb.Helper()
	r := e.get(tb, messagesPath(channel, q), token(tb, nil))
	if r.code != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", messagesPath(channel, q), r.code, r.body)
	}
	var p pageResp
	if err := json.Unmarshal(r.body, &p); err != nil {
		tb.Fatal(err)
	}
	for _, m := range p.Messages {
		if m.Channel != channel || m.ID != fmt.Sprintf("id-%d", m.Seq) || m.Sender != fmt.Sprintf("user-%d", m.Seq%3) ||
			string(m.Data) != fmt.Sprintf(`{"text":"message %d","n":%d}`, m.Seq, m.Seq) ||
			m.PublishedAt != publishedAt(m.Seq).Format("2006-01-02T15:04:05.000Z") {
			tb.Fatalf("bad message %+v", m)
		}
		if wantInfo := m.Seq%2 == 1; wantInfo != (string(m.Info) == `{"name":"Ann"}`) || (!wantInfo && m.Info != nil) {
			tb.Fatalf("seq %d: info %s", m.Seq, m.Info)
		}
	}
	return p
}

func seqs(p pageResp) []uint64 {
	var out []uint64
	for _, m := range p.Messages {
		out = append(out, m.Seq)
	}
	return out
}

func seqRange(from, to uint64, desc bool) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	if desc {
		slices.Reverse(out)
	}
	return out
}

// standard seeds room with seqs 1…23, 1…16 archived (chunks 0-3) and
// purged, 17…23 in the store.
func standard(tb testing.TB, o envOpts) *env {
	e := newEnv(tb, o)
	e.seed(tb, room, 1, 23)
	archiveThrough(tb, e.st, e.arc, room, 16)
	return e
}

func TestCursorWalk(t *testing.T) {
	for _, sf := range stores {
		t.Run(sf.name, func(t *testing.T) {
			e := standard(t, envOpts{st: sf.open(t)})
			if got, _ := e.st.Messages(context.Background(), store.Range{Channel: room, From: 1, To: 100}); len(got) != 7 {
				t.Fatalf("store holds %d messages, want 7", len(got))
			}
			for _, order := range []string{"desc", "asc"} {
				for _, limit := range []int{1, 3, 4, 5, 7, 50} {
					t.Run(fmt.Sprintf("%s limit %d", order, limit), func(t *testing.T) {
						q := url.Values{"limit": {fmt.Sprint(limit)}}
						if order == "asc" {
							q.Set("order", "asc")
						}
						var all []uint64
						for pages := 0; ; pages++ {
							if pages > 30 {
								t.Fatal("too many pages")
							}
							p := e.page(t, room, q)
							if len(p.Messages) > limit || (p.NextCursor != "" && len(p.Messages) != limit) {
								t.Fatalf("page of %d with limit %d, cursor %q", len(p.Messages), limit, p.NextCursor)
							}
							all = append(all, seqs(p)...)
							if p.NextCursor == "" {
								break
							}
							q = url.Values{"limit": {fmt.Sprint(limit)}, "cursor": {p.NextCursor}}
						}
						if want := seqRange(1, 23, order == "desc"); !slices.Equal(all, want) {
							t.Fatalf("walk = %v, want %v", all, want)
						}
					})
				}
			}
		})
	}
}

func TestBounds(t *testing.T) {
	e := standard(t, envOpts{})
	for _, tc := range []struct {
		query string
		want  []uint64
		more  bool
	}{
		{"", seqRange(1, 23, true), false},
		{"limit=3", []uint64{23, 22, 21}, true},
		{"after=14&before=19&order=asc", []uint64{15, 16, 17, 18}, false},
		{"after=14&before=19", []uint64{18, 17, 16, 15}, false},
		{"before=18&limit=3", []uint64{17, 16, 15}, true},
		{"after=15&limit=2&order=asc", []uint64{16, 17}, true},
		{"after=2&before=7&order=asc", []uint64{3, 4, 5, 6}, false},
		{"after=20&order=asc", []uint64{21, 22, 23}, false},
		{"after=23", nil, false},
		{"before=1", nil, false},
		{"before=1000&limit=2", []uint64{23, 22}, true},
		{"after=5&before=6", nil, false},
		{"after=18446744073709551615", nil, false},
		{"before=18446744073709551615&limit=1&order=asc", []uint64{1}, true},
	} {
		t.Run(tc.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			p := e.page(t, room, q)
			if !slices.Equal(seqs(p), tc.want) || (p.NextCursor != "") != tc.more {
				t.Fatalf("got %v cursor %q, want %v more=%v", seqs(p), p.NextCursor, tc.want, tc.more)
			}
		})
	}
	t.Run("raw JSON and empty page shape", func(t *testing.T) {
		r := e.get(t, messagesPath(room, url.Values{"after": {"14"}, "limit": {"1"}, "order": {"asc"}}), token(t, nil))
		if !bytes.Contains(r.body, []byte(`"data":{"text":"message 15","n":15}`)) || !bytes.Contains(r.body, []byte(`"info":{"name":"Ann"}`)) {
			t.Fatalf("body %s", r.body)
		}
		r = e.get(t, messagesPath(room, url.Values{"after": {"23"}}), token(t, nil))
		if strings.TrimSpace(string(r.body)) != `{"messages":[]}` {
			t.Fatalf("empty page body %s", r.body)
		}
	})
}

func TestCursorKeepsBounds(t *testing.T) {
	e := standard(t, envOpts{})
	q := url.Values{"after": {"10"}, "before": {"20"}, "limit": {"3"}}
	var all []uint64
	for i := 0; i < 10; i++ {
		p := e.page(t, room, q)
		all = append(all, seqs(p)...)
		if p.NextCursor == "" {
			break
		}
		// Clients often resend their original parameters with the cursor.
		q.Set("cursor", p.NextCursor)
	}
	if want := seqRange(11, 19, true); !slices.Equal(all, want) {
		t.Fatalf("walk = %v, want %v", all, want)
	}
}

func TestAuth(t *testing.T) {
	e := standard(t, envOpts{})
	path := messagesPath(room, nil)
	other, _ := auth.Sign("another-secret", auth.NewClaims("alice", []string{room}, time.Hour))
	for _, tc := range []struct {
		name string
		tok  string
		hdr  string
		code int
	}{
		{"missing", "", "", 401},
		{"not bearer", "", "Basic YWxpY2U6eA==", 401},
		{"garbage", "not-a-jwt", "", 401},
		{"wrong secret", other, "", 401},
		{"expired", token(t, func(c *auth.Claims) { c.RegisteredClaims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour)) }), "", 401},
		{"other channel", token(t, func(c *auth.Claims) { c.Channels = []string{"room:2"} }), "", 403},
		{"caps without hst", token(t, func(c *auth.Claims) {
			c.Channels = nil
			c.Caps = []auth.Capability{{Channels: []string{"room:*"}, Match: "wildcard", Allow: []string{"sub", "pub"}}}
		}), "", 403},
		{"channel claim", token(t, nil), "", 200},
		{"caps hst", token(t, func(c *auth.Claims) {
			c.Channels = nil
			c.Caps = []auth.Capability{{Channels: []string{"room:1/*"}, Match: "wildcard", Allow: []string{"hst"}}}
		}), "", 200},
		{"admin", token(t, func(c *auth.Claims) { c.Channels = nil; c.Admin = true }), "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.http.URL+path, nil)
			if tc.tok != "" {
				req.Header.Set("Authorization", "Bearer "+tc.tok)
			}
			if tc.hdr != "" {
				req.Header.Set("Authorization", tc.hdr)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("code %d, want %d: %s", resp.StatusCode, tc.code, body)
			}
			if tc.code == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tc.code != 200 && !json.Valid(body) {
				t.Errorf("error body not JSON: %s", body)
			}
		})
	}
	t.Run("channel endpoint requires auth", func(t *testing.T) {
		if r := e.get(t, "/v1/channels/"+url.PathEscape(room), ""); r.code != 401 {
			t.Fatalf("code %d", r.code)
		}
		if r := e.get(t, "/v1/channels/room:2", token(t, nil)); r.code != 403 {
			t.Fatalf("code %d", r.code)
		}
	})
}

func TestBadParams(t *testing.T) {
	e := standard(t, envOpts{})
	for _, tc := range []struct{ query, param string }{
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"limit=ten", "limit"},
		{"order=up", "order"},
		{"before=0", "before"},
		{"before=x", "before"},
		{"after=-1", "after"},
		{"after=5&before=5", "after"},
		{"cursor=!!!", "cursor"},
		{"limit=%zz", ""},
		{"cursor=bm90LWpzb24", "cursor"},
		{"cursor=" + encodeCursor(query{Asc: true, After: 3}) + "&order=desc", "order"},
		// Parameters the endpoint does not take are named, not ignored.
		{"page=2", "page"},
		{"limit=5&since=3", "since"},
		{"reverse=true&Limit=5", "Limit"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			r := e.get(t, messagesPath(room, nil)+"?"+tc.query, token(t, nil))
			var body errorBody
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body %s: %v", r.body, err)
			}
			if r.code != 400 || body.Parameter != tc.param || body.Error == "" {
				t.Fatalf("got %d %+v, want 400 parameter %q", r.code, body, tc.param)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	e := standard(t, envOpts{})
	admin := token(t, func(c *auth.Claims) { c.Admin = true })
	for _, p := range []string{messagesPath("nope", nil), "/v1/channels/nope"} {
		if r := e.get(t, p, admin); r.code != 404 {
			t.Fatalf("%s: %d %s", p, r.code, r.body)
		}
	}
}

func TestChannelAndOpenAPI(t *testing.T) {
	e := standard(t, envOpts{})
	r := e.get(t, "/v1/channels/"+url.PathEscape(room), token(t, nil))
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	var ch channelResponse
	if err := json.Unmarshal(r.body, &ch); err != nil {
		t.Fatal(err)
	}
	if ch != (channelResponse{Channel: room, Epoch: "epoch-1", LastSeq: 23, ArchivedThrough: 16}) {
		t.Fatalf("channel %+v", ch)
	}
	r = e.get(t, "/v1/openapi.json", "")
	var doc map[string]any
	if r.code != 200 || json.Unmarshal(r.body, &doc) != nil || doc["openapi"] != "3.0.3" {
		t.Fatalf("openapi: %d %.100s", r.code, r.body)
	}
	paths := doc["paths"].(map[string]any)
	for _, p := range []string{"/v1/channels/{channel}/messages", "/v1/channels/{channel}"} {
		if paths[p] == nil {
			t.Errorf("openapi lacks %s", p)
		}
	}
}

func rawS3(tb testing.TB) *minio.Client {
	tb.Helper()
	mc, err := minio.New(strings.TrimPrefix(s3test.Endpoint(), "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s3test.AccessKey, s3test.SecretKey, ""), BucketLookup: minio.BucketLookupPath, Region: s3test.Region,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return mc
}

func TestCorruptChunk(t *testing.T) {
	e := standard(t, envOpts{})
	junk := []byte("garbage")
	if _, err := rawS3(t).PutObject(context.Background(), e.acfg.Bucket, archive.ChunkKey(room, 1), bytes.NewReader(junk), int64(len(junk)),
		minio.PutObjectOptions{UserMetadata: map[string]string{"Herald-Sha256": archive.Checksum(junk), "Herald-Count": "4"}}); err != nil {
		t.Fatal(err)
	}
	// Seqs 5…8 live in chunk 1 only.
	r := e.get(t, messagesPath(room, url.Values{"after": {"3"}, "before": {"10"}}), token(t, nil))
	if r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("code %d retry-after %q: %s", r.code, r.header.Get("Retry-After"), r.body)
	}
	if got := metricValue(t, e.srv.m.chunkReads.WithLabelValues("corrupt")); got != 1 {
		t.Errorf("corrupt chunk reads = %v", got)
	}
	// Pages not touching chunk 1 still work.
	if p := e.page(t, room, url.Values{"after": {"8"}, "limit": {"4"}, "order": {"asc"}}); !slices.Equal(seqs(p), seqRange(9, 12, false)) {
		t.Fatalf("page = %v", seqs(p))
	}
}

func TestMissingChunkFallsBackToStore(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.seed(t, room, 1, 8)
	// Archived-through moved but the store was not purged and chunk 1 is
	// absent (e.g. deleted by hand): the store still holds the seqs.
	if _, err := e.arc.PutChunk(context.Background(), room, 0, mustMessages(t, e.st, room, 1, 4)); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetArchivedThrough(context.Background(), room, 8); err != nil {
		t.Fatal(err)
	}
	p := e.page(t, room, url.Values{"order": {"asc"}})
	if !slices.Equal(seqs(p), seqRange(1, 8, false)) {
		t.Fatalf("page = %v", seqs(p))
	}
	if got := metricValue(t, e.srv.m.fallbacks); got != 1 {
		t.Errorf("store fallbacks = %v", got)
	}
}

func mustMessages(tb testing.TB, st store.Store, channel string, from, to uint64) []store.Message {
	tb.Helper()
	msgs, err := st.Messages(context.Background(), store.Range{Channel: channel, From: from, To: to})
	if err != nil {
		tb.Fatal(err)
	}
	return msgs
}

func TestS3Down(t *testing.T) {
	p := s3test.NewProxy(t, s3test.Endpoint())
	e := standard(t, envOpts{endpoint: p.Endpoint()})
	p.SetDown(true)
	r := e.get(t, messagesPath(room, url.Values{"before": {"18"}, "limit": {"4"}}), token(t, nil))
	if r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("code %d: %s", r.code, r.body)
	}
	// Store-only pages are still served.
	if pg := e.page(t, room, url.Values{"limit": {"5"}}); !slices.Equal(seqs(pg), seqRange(19, 23, true)) {
		t.Fatalf("page = %v", seqs(pg))
	}
	if err := e.srv.Ready(context.Background()); err == nil {
		t.Error("Ready with S3 down")
	}
	p.SetDown(false)
	if pg := e.page(t, room, url.Values{"before": {"18"}, "limit": {"4"}}); !slices.Equal(seqs(pg), seqRange(14, 17, true)) {
		t.Fatalf("page = %v", seqs(pg))
	}
}

// racingStore archives and purges chunk 4 (seqs 17…20) right before the
// first Messages call answers, as a concurrent cacher run would.
type racingStore struct {
	store.Store
	arc  *archive.Client
	tb   testing.TB
	once sync.Once
}

func (r *racingStore) Messages(ctx context.Context, rg store.Range) ([]store.Message, error) {
	r.once.Do(func() { archiveThrough(r.tb, r.Store, r.arc, rg.Channel, 20) })
	return r.Store.Messages(ctx, rg)
}

func TestConcurrentArchiveNoGap(t *testing.T) {
	for _, order := range []string{"desc", "asc"} {
		t.Run(order, func(t *testing.T) {
			rs := &racingStore{Store: memstore.New(), tb: t}
			e := newEnv(t, envOpts{st: rs})
			rs.arc = e.arc
			e.seed(t, room, 1, 23)
			archiveThrough(t, rs.Store, e.arc, room, 16)
			q := url.Values{"after": {"14"}, "limit": {"20"}}
			if order == "asc" {
				q.Set("order", "asc")
			}
			p := e.page(t, room, q)
			if want := seqRange(15, 23, order == "desc"); !slices.Equal(seqs(p), want) {
				t.Fatalf("page = %v, want %v", seqs(p), want)
			}
			if got := metricValue(t, e.srv.m.retries); got != 1 {
				t.Errorf("page retries = %v", got)
			}
			if ch, _ := e.st.Channel(context.Background(), room); ch.ArchivedThrough != 20 {
				t.Fatalf("race did not happen: %+v", ch)
			}
		})
	}
}

func TestChunkCache(t *testing.T) {
	e := standard(t, envOpts{})
	q := url.Values{"before": {"9"}, "limit": {"8"}}
	e.page(t, room, q)
	e.page(t, room, q)
	if hits, misses := metricValue(t, e.srv.m.cacheHits), metricValue(t, e.srv.m.cacheMiss); hits != 2 || misses != 2 {
		t.Fatalf("hits %v misses %v", hits, misses)
	}
	if got := metricValue(t, e.srv.m.chunkReads.WithLabelValues("ok")); got != 2 {
		t.Fatalf("S3 reads %v", got)
	}
	if b := metricValue(t, e.srv.m.cacheBytes); b <= 0 || int64(b) != e.srv.cache.bytes() {
		t.Fatalf("cache bytes gauge %v, cache %d", b, e.srv.cache.bytes())
	}
}

func TestCacheEviction(t *testing.T) {
	var size int64
	c := newChunkCache(2000, func(n int64) { size = n })
	mk := func(n int) []store.Message {
		msgs := make([]store.Message, n)
		for i := range msgs {
			msgs[i] = store.Message{ID: "x", Data: make([]byte, 100)}
		}
		return msgs
	}
	loads := 0
	load := func(n int) func() ([]store.Message, error) {
		return func() ([]store.Message, error) { loads++; return mk(n), nil }
	}
	ctx := context.Background()
	c.get(ctx, "a", load(3)) // ~800 bytes
	c.get(ctx, "b", load(3))
	c.get(ctx, "a", load(3)) // hit, a most recent
	c.get(ctx, "c", load(3)) // evicts b
	if _, hit, _ := c.get(ctx, "a", load(3)); !hit {
		t.Error("a evicted")
	}
	if _, hit, _ := c.get(ctx, "b", load(3)); hit {
		t.Error("b not evicted")
	}
	if c.bytes() > 2000 || size != c.bytes() {
		t.Errorf("size %d, reported %d", c.bytes(), size)
	}
	c.get(ctx, "huge", load(100))
	if _, hit, _ := c.get(ctx, "huge", load(100)); hit {
		t.Error("chunk larger than the cache was cached")
	}
	if loads != 6 {
		t.Errorf("loads = %d", loads)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Addr: "127.0.0.1:8080", CacheBytes: 64 << 20}, true},
		{Config{Addr: "nope"}, false},
		{Config{Addr: ":1", CacheBytes: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
	}
}

func TestRunAndMetrics(t *testing.T) {
	e := standard(t, envOpts{})
	srv, err := New(Config{Addr: "127.0.0.1:0", CacheBytes: 1 << 20}, e.st, e.arc, auth.NewVerifier(secret), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	if err := srv.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Request metrics are labelled by route pattern, not by channel.
	e.page(t, room, nil)
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "herald_management_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() != "GET /v1/channels/{channel}/messages" {
					t.Errorf("route label %q", l.GetValue())
				}
			}
		}
		return
	}
	t.Fatal("no request duration metric")
}

var metricValue = testutil.MetricValue

// A path no route has, and a method a route does not have, answer JSON in
// the shape of every other error (405 with Allow); so do unknown query
// parameters of the channel and OpenAPI endpoints.
func TestUnknownRoutesAndParameters(t *testing.T) {
	e := standard(t, envOpts{})
	tok := token(t, nil)
	for _, tc := range []struct {
		method, path string
		code         int
		allow, param string
	}{
		{"GET", "/v1/nope", 404, "", ""},
		{"GET", "/", 404, "", ""},
		{"GET", "/v1/channels/" + url.PathEscape(room) + "/messages/extra", 404, "", ""},
		{"POST", messagesPath(room, nil), 405, "GET, HEAD", ""},
		{"DELETE", "/v1/channels/" + url.PathEscape(room), 405, "GET, HEAD", ""},
		{"PUT", "/v1/openapi.json", 405, "GET, HEAD", ""},
		{"GET", "/v1/channels/" + url.PathEscape(room) + "?limit=1", 400, "", "limit"},
		{"GET", "/v1/openapi.json?format=yaml", 400, "", "format"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, body := testutil.Do(t, tc.method, e.http.URL+tc.path, tok, nil)
			if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Allow") != tc.allow {
				t.Fatalf("%d %q Allow %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), body)
			}
			var eb errorBody
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&eb); err != nil || eb.Error == "" || eb.Parameter != tc.param {
				t.Fatalf("body %s (%v), want parameter %q", body, err, tc.param)
			}
		})
	}
}

// The document's server is relative, so it names the origin it is fetched
// from (directly, or through nginx on another host and port) rather than a
// fixed address.
func TestOpenAPIServerIsWhereItIsServed(t *testing.T) {
	e := standard(t, envOpts{})
	docURL, err := url.Parse(e.http.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	r := e.get(t, docURL.Path, "")
	var d struct {
		Servers []struct {
			URL string `json:"url"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(r.body, &d); err != nil || len(d.Servers) != 1 {
		t.Fatalf("servers: %v %s", err, r.body)
	}
	srv, err := url.Parse(d.Servers[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, served := range []string{docURL.String(), "https://chat.example.com:8443/v1/openapi.json"} {
		base, _ := url.Parse(served)
		got := base.ResolveReference(srv)
		if got.Scheme != base.Scheme || got.Host != base.Host || got.Path != "/" {
			t.Errorf("server %q fetched from %s resolves to %s, want that origin", srv, served, got)
		}
	}
	// And an operation under it answers there.
	api := strings.TrimSuffix(docURL.ResolveReference(srv).String(), "/") + "/v1/channels/" + url.PathEscape(room)
	if resp, body := testutil.Do(t, "GET", api, token(t, nil), nil); resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", api, resp.StatusCode, body)
	}
}
