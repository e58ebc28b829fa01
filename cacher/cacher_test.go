package cacher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

func TestMain(m *testing.M) {
	code := s3test.Run(m)
	teststore.Stop()
	os.Exit(code)
}

const k = 4

var (
	old    = time.Now().Add(-48 * time.Hour).Truncate(time.Millisecond)
	recent = time.Now().Add(-time.Minute).Truncate(time.Millisecond)
)

// seeder writes messages through store.WriteBatch.
type seeder struct {
	st     store.Store
	offset int64
}

func (s *seeder) seed(tb testing.TB, channel string, seqs []uint64, at time.Time) {
	tb.Helper()
	b := store.Batch{Partition: 0}
	var last uint64
	for _, seq := range seqs {
		s.offset++
		b.Messages = append(b.Messages, store.Message{
			ID: fmt.Sprintf("%s-%d", channel, seq), Channel: channel, Seq: seq, Sender: "u1",
			Data: []byte(fmt.Sprintf(`{"n":%d}`, seq)), PublishedAt: at, Partition: 0, Offset: s.offset,
		})
		last = max(last, seq)
	}
	b.Heads = []store.Head{{Channel: channel, Partition: 0, Epoch: "ep-" + channel, LastSeq: last, Offset: s.offset}}
	b.NextOffset = s.offset + 1
	if err := s.st.WriteBatch(context.Background(), b); err != nil {
		tb.Fatal(err)
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

type env struct {
	st   store.Store
	seed *seeder
	arc  *archive.Client
	cfg  archive.Config
	ccfg Config // the cacher's
	c    *Server
	reg  *prometheus.Registry
}

type option func(*env)

func withEndpoint(ep string) option   { return func(e *env) { e.cfg.Endpoint = ep } }
func withStore(st store.Store) option { return func(e *env) { e.st = st } }
func withAdminOnly(v *auth.Verifier) option {
	return func(e *env) { e.ccfg.RequireAdmin, e.ccfg.Verifier = true, v }
}

func newEnv(tb testing.TB, opts ...option) *env {
	tb.Helper()
	e := &env{st: memstore.New(), reg: prometheus.NewRegistry(),
		ccfg: Config{Addr: "127.0.0.1:0", ChunkSize: k, MinAge: 24 * time.Hour, Interval: time.Hour}}
	e.cfg = archive.Config{
		Endpoint: s3test.Endpoint(), Bucket: s3test.Bucket(tb), AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey,
		ChunkSize: k, MaxRetries: 1, RequestTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(e)
	}
	e.seed = &seeder{st: e.st}
	arc, err := archive.New(context.Background(), e.cfg)
	if err != nil {
		tb.Fatal(err)
	}
	e.arc = arc
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.c, err = New(e.ccfg, e.st, arc, log, e.reg)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func (e *env) run(tb testing.TB, channel string) RunStatus {
	tb.Helper()
	st, err := e.c.RunOnce(context.Background(), channel)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func (e *env) channel(tb testing.TB, name string) store.Channel {
	tb.Helper()
	ch, err := e.st.Channel(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return ch
}

// stored returns the seqs the store holds for channel.
func (e *env) stored(tb testing.TB, channel string) []uint64 {
	tb.Helper()
	msgs, err := e.st.Messages(context.Background(), store.Range{Channel: channel, From: 1, To: 1 << 62})
	if err != nil {
		tb.Fatal(err)
	}
	var out []uint64
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

func (e *env) expectArchived(tb testing.TB, channel string, through uint64, stored []uint64) {
	tb.Helper()
	ch := e.channel(tb, channel)
	if ch.ArchivedThrough != through {
		tb.Errorf("%s: archived through %d, want %d", channel, ch.ArchivedThrough, through)
	}
	if got := e.stored(tb, channel); fmt.Sprint(got) != fmt.Sprint(stored) {
		tb.Errorf("%s: store holds %v, want %v", channel, got, stored)
	}
	for n := uint64(0); (n+1)*k <= through; n++ {
		msgs, err := e.arc.GetChunk(context.Background(), channel, n)
		if err != nil {
			tb.Fatalf("%s chunk %d: %v", channel, n, err)
		}
		for i, m := range msgs {
			if want := fmt.Sprintf("%s-%d", channel, n*k+uint64(i)+1); m.ID != want {
				tb.Fatalf("%s chunk %d: message %d id %s, want %s", channel, n, i, m.ID, want)
			}
		}
	}
	n := through / k
	if _, err := e.arc.GetChunk(context.Background(), channel, n); !archive.IsNotFound(err) {
		tb.Errorf("%s chunk %d: err = %v, want not found", channel, n, err)
	}
}

type storeFactory struct {
	name string
	open func(tb testing.TB) store.Store
}

var stores = []storeFactory{
	{"memstore", teststore.Memstore},
	{"sqlite", teststore.SQLite},
	{"mongo-ferretdb", teststore.Mongo},
}

func TestRunArchivesOldFullChunks(t *testing.T) {
	for _, sf := range stores {
		t.Run(sf.name, func(t *testing.T) { testRunArchivesOldFullChunks(t, sf.open(t)) })
	}
}

func testRunArchivesOldFullChunks(t *testing.T, s store.Store) {
	e := newEnv(t, withStore(s))
	e.seed.seed(t, "old", seqRange(1, 10), old)   // chunks 0,1 full, 2 partial
	e.seed.seed(t, "new", seqRange(1, 8), recent) // full but too new
	e.seed.seed(t, "mixed", seqRange(1, 4), old)  // chunk 0 old, chunk 1 new
	e.seed.seed(t, "mixed", seqRange(5, 9), recent)
	e.seed.seed(t, "tiny", seqRange(1, 3), old) // no full chunk

	st := e.run(t, "")
	if st.Status != StatusSucceeded || st.ChunksArchived != 3 || st.MessagesPurged != 12 || st.ChannelsScanned != 4 || st.ChunksReused != 0 {
		t.Fatalf("run = %+v", st)
	}
	e.expectArchived(t, "old", 8, []uint64{9, 10})
	e.expectArchived(t, "new", 0, seqRange(1, 8))
	e.expectArchived(t, "mixed", 4, seqRange(5, 9))
	e.expectArchived(t, "tiny", 0, seqRange(1, 3))
	if got := metricValue(t, e.c.m.chunks); got != 3 {
		t.Errorf("chunks_archived_total = %v", got)
	}
	if got := metricValue(t, e.c.m.purged); got != 12 {
		t.Errorf("messages_purged_total = %v", got)
	}
	if got := metricValue(t, e.c.m.bytes); got <= 0 || int64(got) != st.BytesArchived {
		t.Errorf("bytes_archived_total = %v, run says %d", got, st.BytesArchived)
	}
	if got := metricValue(t, e.c.m.lastSuccess); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last_success_timestamp_seconds = %v", got)
	}

	t.Run("rerun converges", func(t *testing.T) {
		st := e.run(t, "")
		if st.Status != StatusSucceeded || st.ChunksArchived != 0 || st.MessagesPurged != 0 {
			t.Fatalf("run = %+v", st)
		}
		e.expectArchived(t, "old", 8, []uint64{9, 10})
	})
	t.Run("chunk completed later", func(t *testing.T) {
		e.seed.seed(t, "old", seqRange(11, 13), old)
		st := e.run(t, "old")
		if st.Status != StatusSucceeded || st.ChunksArchived != 1 || st.MessagesPurged != 4 || st.ChannelsScanned != 1 {
			t.Fatalf("run = %+v", st)
		}
		e.expectArchived(t, "old", 12, []uint64{13})
		e.expectArchived(t, "new", 0, seqRange(1, 8))
	})
	if got := metricValue(t, e.c.m.runs.WithLabelValues(StatusSucceeded)); got != 3 {
		t.Errorf("runs_total{succeeded} = %v", got)
	}
}

func TestRunUnknownChannelFails(t *testing.T) {
	e := newEnv(t)
	if st := e.run(t, "nope"); st.Status != StatusFailed || !strings.Contains(st.Error, "not found") {
		t.Fatalf("run = %+v", st)
	}
}

func TestRunSkipsIncompleteChunk(t *testing.T) {
	e := newEnv(t)
	e.seed.seed(t, "gap", []uint64{1, 2, 4, 5, 6, 7, 8}, old) // seq 3 missing
	st := e.run(t, "")
	if st.Status != StatusSucceeded || st.ChunksSkipped != 1 || len(st.Skipped) != 1 || st.ChunksArchived != 0 {
		t.Fatalf("run = %+v", st)
	}
	e.expectArchived(t, "gap", 0, []uint64{1, 2, 4, 5, 6, 7, 8})
	if got := metricValue(t, e.c.m.skipped); got != 1 {
		t.Errorf("chunks_skipped_total = %v", got)
	}
}

// rawS3 returns a plain S3 client to tamper with chunk objects.
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

func (e *env) storeChunk(tb testing.TB, channel string, n uint64) []store.Message {
	tb.Helper()
	msgs, err := e.st.Messages(context.Background(), store.Range{Channel: channel, From: n*k + 1, To: (n + 1) * k})
	if err != nil {
		tb.Fatal(err)
	}
	return msgs
}

func TestRunConvergesAfterCrash(t *testing.T) {
	for _, sf := range stores {
		t.Run(sf.name, func(t *testing.T) { testRunConvergesAfterCrash(t, sf) })
	}
}

func testRunConvergesAfterCrash(t *testing.T, sf storeFactory) {
	ctx := context.Background()
	t.Run("chunk written, archived-through not set", func(t *testing.T) {
		e := newEnv(t, withStore(sf.open(t)))
		e.seed.seed(t, "c", seqRange(1, 8), old)
		if _, err := e.arc.PutChunk(ctx, "c", 0, e.storeChunk(t, "c", 0)); err != nil {
			t.Fatal(err)
		}
		st := e.run(t, "")
		if st.Status != StatusSucceeded || st.ChunksArchived != 2 || st.ChunksReused != 1 || st.MessagesPurged != 8 {
			t.Fatalf("run = %+v", st)
		}
		e.expectArchived(t, "c", 8, nil)
	})
	t.Run("archived-through set, not purged", func(t *testing.T) {
		e := newEnv(t, withStore(sf.open(t)))
		e.seed.seed(t, "c", seqRange(1, 6), old)
		if _, err := e.arc.PutChunk(ctx, "c", 0, e.storeChunk(t, "c", 0)); err != nil {
			t.Fatal(err)
		}
		if err := e.st.SetArchivedThrough(ctx, "c", 4); err != nil {
			t.Fatal(err)
		}
		st := e.run(t, "")
		if st.Status != StatusSucceeded || st.ChunksArchived != 0 || st.MessagesPurged != 4 {
			t.Fatalf("run = %+v", st)
		}
		e.expectArchived(t, "c", 4, []uint64{5, 6})
	})
	t.Run("corrupt chunk in S3 is rewritten", func(t *testing.T) {
		e := newEnv(t, withStore(sf.open(t)))
		e.seed.seed(t, "c", seqRange(1, 4), old)
		junk := []byte("not a chunk")
		if _, err := rawS3(t).PutObject(ctx, e.cfg.Bucket, archive.ChunkKey("c", 0), bytes.NewReader(junk), int64(len(junk)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		st := e.run(t, "")
		if st.Status != StatusSucceeded || st.ChunksArchived != 1 || st.ChunksReused != 0 || st.MessagesPurged != 4 {
			t.Fatalf("run = %+v", st)
		}
		e.expectArchived(t, "c", 4, nil)
	})
	t.Run("valid chunk with other messages is not overwritten", func(t *testing.T) {
		e := newEnv(t, withStore(sf.open(t)))
		e.seed.seed(t, "c", seqRange(1, 4), old)
		other := e.storeChunk(t, "c", 0)
		other[2].ID = "someone-else"
		if _, err := e.arc.PutChunk(ctx, "c", 0, other); err != nil {
			t.Fatal(err)
		}
		st := e.run(t, "")
		if st.Status != StatusFailed || st.MessagesPurged != 0 || !strings.Contains(st.Error, "other messages") {
			t.Fatalf("run = %+v", st)
		}
		if ch := e.channel(t, "c"); ch.ArchivedThrough != 0 || len(e.stored(t, "c")) != 4 {
			t.Fatalf("channel %+v, stored %v", ch, e.stored(t, "c"))
		}
		if got := metricValue(t, e.c.m.verifyFail); got != 1 {
			t.Errorf("verification_failures_total = %v", got)
		}
		if got := metricValue(t, e.c.m.runs.WithLabelValues(StatusFailed)); got != 1 {
			t.Errorf("runs_total{failed} = %v", got)
		}
	})
}

func TestRunS3DownPurgesNothing(t *testing.T) {
	for _, sf := range stores {
		t.Run(sf.name, func(t *testing.T) { testRunS3DownPurgesNothing(t, sf.open(t)) })
	}
}

func testRunS3DownPurgesNothing(t *testing.T, s store.Store) {
	p := s3test.NewProxy(t, s3test.Endpoint())
	e := newEnv(t, withEndpoint(p.Endpoint()), withStore(s))
	e.seed.seed(t, "a", seqRange(1, 8), old)
	e.seed.seed(t, "b", seqRange(1, 8), old)
	p.SetDown(true)
	st := e.run(t, "")
	if st.Status != StatusFailed || st.MessagesPurged != 0 || st.ChunksArchived != 0 || !strings.Contains(st.Error, "unavailable") {
		t.Fatalf("run = %+v", st)
	}
	for _, c := range []string{"a", "b"} {
		if ch := e.channel(t, c); ch.ArchivedThrough != 0 || len(e.stored(t, c)) != 8 {
			t.Fatalf("%s: channel %+v, stored %v", c, ch, e.stored(t, c))
		}
	}
	if got := metricValue(t, e.c.m.runs.WithLabelValues(StatusFailed)); got != 1 {
		t.Errorf("runs_total{failed} = %v", got)
	}
	p.SetDown(false)
	if st := e.run(t, ""); st.Status != StatusSucceeded || st.MessagesPurged != 16 {
		t.Fatalf("run after S3 is back = %+v", st)
	}
	e.expectArchived(t, "a", 8, nil)
	e.expectArchived(t, "b", 8, nil)
}

// gatedStore blocks Channels until the gate is closed.
type gatedStore struct {
	store.Store
	gate    chan struct{}
	entered atomic.Int32
}

func (g *gatedStore) Channels(ctx context.Context, after string, limit int) ([]store.Channel, error) {
	g.entered.Add(1)
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.Channels(ctx, after, limit)
}

// With RequireAdmin the API answers only admin tokens: 401 without a
// token or with a bad one, 403 for a valid non-admin token.
func TestHTTPAPIRequiresAdmin(t *testing.T) {
	const secret = "cacher-test-secret"
	e := newEnv(t, withAdminOnly(auth.NewVerifier(secret)))
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	sign := func(c *auth.Claims) string {
		tok, err := auth.Sign(secret, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	admin := auth.NewClaims("ops", nil, time.Minute)
	admin.Admin = true
	other := auth.NewClaims("ops", nil, time.Minute)
	forged, _ := auth.Sign("another-secret", admin)
	do := func(method, path, token string) int {
		resp, _ := testutil.Do(t, method, srv.URL+path, token, nil)
		return resp.StatusCode
	}
	for _, c := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"forged", forged, http.StatusUnauthorized},
		{"not admin", sign(other), http.StatusForbidden},
	} {
		if got := do(http.MethodPost, "/v1/archive/run", c.token); got != c.want {
			t.Errorf("POST with %s: %d, want %d", c.name, got, c.want)
		}
		if got := do(http.MethodGet, "/v1/archive/runs/x", c.token); got != c.want {
			t.Errorf("GET with %s: %d, want %d", c.name, got, c.want)
		}
	}
	if got := do(http.MethodPost, "/v1/archive/run", sign(admin)); got != http.StatusAccepted {
		t.Errorf("POST with an admin token: %d, want 202", got)
	}
	if got := do(http.MethodGet, "/v1/archive/runs/x", sign(admin)); got != http.StatusNotFound {
		t.Errorf("GET of an unknown run with an admin token: %d, want 404", got)
	}
	// RequireAdmin without a verifier is a configuration error.
	if err := (&Config{Addr: "127.0.0.1:0", Interval: time.Hour, RequireAdmin: true}).Validate(); err == nil || !strings.Contains(err.Error(), "HERALD_TOKEN_SECRET") {
		t.Errorf("RequireAdmin without a secret: %v", err)
	}
}

func TestHTTPAPI(t *testing.T) {
	gs := &gatedStore{Store: memstore.New(), gate: make(chan struct{})}
	e := newEnv(t, withStore(gs))
	e.seed.seed(t, "c", seqRange(1, 9), old)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()

	post := func(query string) (int, map[string]any) {
		resp, err := http.Post(srv.URL+"/v1/archive/run"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	get := func(id string) (int, RunStatus) {
		resp, err := http.Get(srv.URL + "/v1/archive/runs/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st RunStatus
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, st
	}

	code, body := post("")
	if code != http.StatusAccepted || body["run_id"] == "" || body["started"] != true {
		t.Fatalf("POST: %d %v", code, body)
	}
	id := body["run_id"].(string)
	code2, body2 := post("?channel=c")
	if code2 != http.StatusAccepted || body2["run_id"] != id || body2["started"] != false {
		t.Fatalf("second POST while running: %d %v", code2, body2)
	}
	if code, st := get(id); code != http.StatusOK || st.Status != StatusRunning {
		t.Fatalf("GET running: %d %+v", code, st)
	}
	close(gs.gate)
	deadline := time.Now().Add(10 * time.Second)
	var st RunStatus
	for {
		_, st = get(id)
		if st.Status != StatusRunning || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.Status != StatusSucceeded || st.ChunksArchived != 2 || st.MessagesPurged != 8 || st.FinishedAt == nil {
		t.Fatalf("finished run: %+v", st)
	}
	code, body = post("?channel=c")
	if code != http.StatusAccepted || body["run_id"] == id || body["started"] != true {
		t.Fatalf("POST after finish: %d %v", code, body)
	}
	if code, _ := get("nope"); code != http.StatusNotFound {
		t.Fatalf("GET unknown: %d", code)
	}
	e.c.wait(context.Background(), body["run_id"].(string))
}

func TestRunServesAndShutsDown(t *testing.T) {
	e := newEnv(t)
	e.seed.seed(t, "c", seqRange(1, 4), old)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	// Run triggers a first run at once.
	deadline := time.Now().Add(10 * time.Second)
	for e.channel(t, "c").ArchivedThrough != 4 {
		if time.Now().After(deadline) {
			t.Fatal("first run did not archive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Addr: "127.0.0.1:8081", ChunkSize: 256, MinAge: 24 * time.Hour, Interval: 5 * time.Minute}, true},
		{"bad addr", Config{Addr: "nope", Interval: time.Minute}, false},
		{"zero interval", Config{Addr: ":1"}, false},
		{"negative age", Config{Addr: ":1", Interval: time.Minute, MinAge: -1}, false},
		{"lease ttl too short", Config{Addr: ":1", Interval: time.Minute, LeaseTTL: time.Millisecond}, false},
		{"lease ttl", Config{Addr: ":1", Interval: time.Minute, LeaseTTL: 10 * time.Second}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v", err)
			}
		})
	}
	e := newEnv(t)
	if _, err := New(Config{Addr: ":1", ChunkSize: k + 1, Interval: time.Minute}, e.st, e.arc, nil, nil); err == nil {
		t.Fatal("chunk size mismatch accepted")
	}
}

var metricValue = testutil.MetricValue
