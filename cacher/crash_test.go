package cacher

// Crash, outage, corruption, lease and concurrency tests of the cacher
// against versitygw and every store (memstore, SQLite, MongoDB on
// FerretDB), with the management service reading history from the same
// store and bucket to check what users would see.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/engines/s3local/s3test"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	"github.com/herald-chat/herald/management"
)

const historySecret = "cacher-test-secret"

// newServer returns another cacher instance over e's store and bucket (a
// fresh process after a crash, or a second instance).
func (e *env) newServer(tb testing.TB, mutate func(c *Config)) *Server {
	tb.Helper()
	cfg := Config{Addr: "127.0.0.1:0", ChunkSize: k, MinAge: 24 * time.Hour, Interval: time.Hour}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg, e.st, e.arc, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// history is a management service over a store and bucket.
type history struct {
	url string
	tok string
}

func newHistory(tb testing.TB, st store.Store, acfg archive.Config) *history {
	tb.Helper()
	arc, err := archive.New(context.Background(), acfg)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := management.New(management.Config{Addr: "127.0.0.1:0", CacheBytes: 1 << 20}, st, arc, auth.NewVerifier(historySecret),
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	tb.Cleanup(hs.Close)
	c := auth.NewClaims("reader", nil, time.Hour)
	c.Admin = true
	tok, err := auth.Sign(historySecret, c)
	if err != nil {
		tb.Fatal(err)
	}
	return &history{url: hs.URL, tok: tok}
}

type pageOut struct {
	code       int
	retryAfter string
	seqs       []uint64
	ids        []string
	next       string
}

func (h *history) get(channel string, q url.Values) (pageOut, error) {
	req, _ := http.NewRequest("GET", h.url+"/v1/channels/"+url.PathEscape(channel)+"/messages?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+h.tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return pageOut{}, err
	}
	defer resp.Body.Close()
	out := pageOut{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return out, nil
	}
	var body struct {
		Messages []struct {
			ID  string `json:"id"`
			Seq uint64 `json:"seq"`
		} `json:"messages"`
		NextCursor string `json:"next_cursor"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return out, err
	}
	for _, m := range body.Messages {
		out.seqs = append(out.seqs, m.Seq)
		out.ids = append(out.ids, m.ID)
	}
	out.next = body.NextCursor
	return out, nil
}

// walk reads the whole history of channel page by page and checks every
// page: dense, ordered, the right messages, full unless it is the last.
func (h *history) walk(channel string, asc bool, limit int) ([]uint64, error) {
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if asc {
		q.Set("order", "asc")
	}
	var all []uint64
	for pages := 0; ; pages++ {
		if pages > 10000 {
			return nil, errors.New("too many pages")
		}
		p, err := h.get(channel, q)
		if err != nil {
			return nil, err
		}
		if p.code != http.StatusOK {
			return nil, fmt.Errorf("page %d: status %d", pages, p.code)
		}
		if len(p.seqs) > limit || (p.next != "" && len(p.seqs) != limit) {
			return nil, fmt.Errorf("page of %d with limit %d, cursor %q", len(p.seqs), limit, p.next)
		}
		for i, s := range p.seqs {
			if p.ids[i] != fmt.Sprintf("%s-%d", channel, s) {
				return nil, fmt.Errorf("seq %d has id %s", s, p.ids[i])
			}
			if i > 0 && ((asc && s != p.seqs[i-1]+1) || (!asc && s != p.seqs[i-1]-1)) {
				return nil, fmt.Errorf("page not dense/ordered: %v", p.seqs)
			}
		}
		if n := len(all); n > 0 && len(p.seqs) > 0 {
			if prev := all[n-1]; (asc && p.seqs[0] != prev+1) || (!asc && p.seqs[0] != prev-1) {
				return nil, fmt.Errorf("gap or duplicate between pages: %d then %d", prev, p.seqs[0])
			}
		}
		all = append(all, p.seqs...)
		if p.next == "" {
			return all, nil
		}
		q = url.Values{"limit": {fmt.Sprint(limit)}, "cursor": {p.next}}
	}
}

func (h *history) expectComplete(tb testing.TB, channel string, last uint64) {
	tb.Helper()
	for _, c := range []struct {
		asc   bool
		limit int
	}{{true, 3}, {false, 5}} {
		got, err := h.walk(channel, c.asc, c.limit)
		if err != nil {
			tb.Fatalf("history of %s (asc=%v): %v", channel, c.asc, err)
		}
		want := seqRange(1, last)
		if !c.asc {
			slices.Reverse(want)
		}
		if !slices.Equal(got, want) {
			tb.Fatalf("history of %s (asc=%v) = %v, want 1…%d once each", channel, c.asc, got, last)
		}
	}
}

// expectNothingLost checks I5: every seq 1…last is in the store or, at or
// below archived-through, in a chunk that reads back verified.
func (e *env) expectNothingLost(tb testing.TB, channel string, last uint64) {
	tb.Helper()
	ch := e.channel(tb, channel)
	stored := map[uint64]bool{}
	for _, s := range e.stored(tb, channel) {
		stored[s] = true
	}
	chunks := map[uint64][]store.Message{}
	for seq := uint64(1); seq <= last; seq++ {
		if stored[seq] {
			continue
		}
		if seq > ch.ArchivedThrough {
			tb.Fatalf("seq %d purged but archived-through is %d", seq, ch.ArchivedThrough)
		}
		n := (seq - 1) / k
		msgs, ok := chunks[n]
		if !ok {
			var err error
			if msgs, err = e.arc.GetChunk(context.Background(), channel, n); err != nil {
				tb.Fatalf("seq %d purged but its chunk %d does not verify: %v", seq, n, err)
			}
			chunks[n] = msgs
		}
		if m := msgs[(seq-1)%k]; m.Seq != seq || m.ID != fmt.Sprintf("%s-%d", channel, seq) {
			tb.Fatalf("seq %d purged; chunk holds %+v", seq, m)
		}
	}
}

var errKilled = errors.New("killed")

func TestKillAfterEachStepAndRerun(t *testing.T) {
	for _, sf := range stores {
		t.Run(sf.name, func(t *testing.T) {
			for _, step := range []string{"written", "verified", "archived", "purge"} {
				t.Run(step, func(t *testing.T) { testKillAfterStep(t, sf, step) })
			}
		})
	}
}

// testKillAfterStep kills a run of a channel of 14 messages (chunks 0-2
// full, K=4) right after step of chunk 1 ("purge": half of chunk 1's
// messages deleted), as kill -9 would, leaving its lease behind; then a
// new instance reruns.
func testKillAfterStep(t *testing.T, sf storeFactory, step string) {
	const last = 14
	e := newEnv(t, withStore(sf.open(t)))
	e.seed.seed(t, "c", seqRange(1, last), old)
	h := newHistory(t, e.st, e.cfg)

	ctx, kill := context.WithCancel(context.Background())
	defer kill()
	e.c.hook = func(hctx context.Context, s, channel string, n uint64) error {
		if s != step || n != 1 {
			return nil
		}
		if s == "purge" {
			if _, err := e.st.Purge(hctx, channel, 6); err != nil { // part of chunk 1 (seqs 5-8)
				t.Error(err)
			}
		}
		kill()
		return errKilled
	}
	st, err := e.c.RunOnce(ctx, "")
	if err != nil || st.Status != StatusFailed {
		t.Fatalf("killed run = %+v, %v", st, err)
	}
	wantAT := map[string]uint64{"written": 4, "verified": 4, "archived": 8, "purge": 8}[step]
	if ch := e.channel(t, "c"); ch.ArchivedThrough != wantAT {
		t.Fatalf("after kill at %s: archived through %d, want %d", step, ch.ArchivedThrough, wantAT)
	}
	e.expectNothingLost(t, "c", last)
	h.expectComplete(t, "c", last)

	// The killed instance's lease outlives it; a new instance waits it out.
	if _, ok, err := e.st.AcquireLease(context.Background(), LeaseName, "killed-instance", 300*time.Millisecond); err != nil || !ok {
		t.Fatalf("leaving a lease behind: %v %v", ok, err)
	}
	c2 := e.newServer(t, nil)
	var held *HeldElsewhereError
	if _, err := c2.RunOnce(context.Background(), ""); !errors.As(err, &held) || held.Lease.Owner != "killed-instance" {
		t.Fatalf("rerun while the dead lease is live: %v", err)
	}
	time.Sleep(350 * time.Millisecond)
	st, err = c2.RunOnce(context.Background(), "")
	if err != nil || st.Status != StatusSucceeded {
		t.Fatalf("rerun = %+v, %v", st, err)
	}
	if step == "written" || step == "verified" {
		if st.ChunksReused != 1 || st.ChunksArchived != 2 {
			t.Errorf("rerun after %s: %+v, want chunk 1 reused and chunk 2 archived", step, st)
		}
	}
	e.expectArchived(t, "c", 12, []uint64{13, 14})
	e.expectNothingLost(t, "c", last)
	h.expectComplete(t, "c", last)
	if st, err := c2.RunOnce(context.Background(), ""); err != nil || st.ChunksArchived != 0 || st.MessagesPurged != 0 {
		t.Fatalf("second rerun = %+v, %v", st, err)
	}
}

func TestS3StoppedDuringRun(t *testing.T) {
	for _, sf := range stores {
		t.Run(sf.name, func(t *testing.T) {
			p := s3test.NewProxy(t, s3test.Endpoint())
			e := newEnv(t, withEndpoint(p.Endpoint()), withStore(sf.open(t)))
			e.seed.seed(t, "c", seqRange(1, 14), old)
			h := newHistory(t, e.st, e.cfg)
			// S3 goes down after chunk 1 is written, before it is verified.
			e.c.hook = func(_ context.Context, s, _ string, n uint64) error {
				if s == "written" && n == 1 {
					p.SetDown(true)
				}
				return nil
			}
			st := e.run(t, "")
			if st.Status != StatusFailed || !strings.Contains(st.Error, "unavailable") || st.ChunksArchived != 1 || st.MessagesPurged != 4 {
				t.Fatalf("run = %+v", st)
			}
			if ch := e.channel(t, "c"); ch.ArchivedThrough != 4 || !slices.Equal(e.stored(t, "c"), seqRange(5, 14)) {
				t.Fatalf("after the outage: %+v, stored %v", ch, e.stored(t, "c"))
			}
			// History still answers from the store; archived seqs say 503.
			pg, err := h.get("c", url.Values{"after": {"4"}, "order": {"asc"}})
			if err != nil || pg.code != http.StatusOK || !slices.Equal(pg.seqs, seqRange(5, 14)) {
				t.Fatalf("store page while S3 is down: %+v %v", pg, err)
			}
			pg, err = h.get("c", url.Values{"before": {"7"}})
			if err != nil || pg.code != http.StatusServiceUnavailable || pg.retryAfter == "" {
				t.Fatalf("archived page while S3 is down: %+v %v", pg, err)
			}
			p.SetDown(false)
			e.c.hook = nil
			if st := e.run(t, ""); st.Status != StatusSucceeded || st.MessagesPurged != 8 {
				t.Fatalf("run after S3 is back = %+v", st)
			}
			e.expectArchived(t, "c", 12, []uint64{13, 14})
			h.expectComplete(t, "c", 14)
		})
	}
}

// rewriteObject replaces an object's bytes keeping its user metadata
// (checksum, count), as silent corruption or a truncated upload would.
func rewriteObject(tb testing.TB, bucket, key string, f func([]byte) []byte) {
	tb.Helper()
	ctx := context.Background()
	mc := rawS3(tb)
	obj, err := mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	body, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		tb.Fatal(err)
	}
	info, err := mc.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	meta := map[string]string{}
	for hk, v := range info.Metadata {
		if name, ok := strings.CutPrefix(hk, "X-Amz-Meta-"); ok {
			meta[name] = v[0]
		}
	}
	body = f(body)
	if _, err := mc.PutObject(ctx, bucket, key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{UserMetadata: meta}); err != nil {
		tb.Fatal(err)
	}
}

func TestCorruptedChunkFailsVerification(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"bit flipped", func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 0x40; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withStore(stores[1].open(t)))
			e.seed.seed(t, "c", seqRange(1, 8), old)
			h := newHistory(t, e.st, e.cfg)
			e.c.hook = func(_ context.Context, s, channel string, n uint64) error {
				if s == "written" && n == 0 {
					rewriteObject(t, e.cfg.Bucket, archive.ChunkKey(channel, n), tc.f)
				}
				return nil
			}
			st := e.run(t, "")
			if st.Status != StatusFailed || st.MessagesPurged != 0 || !strings.Contains(st.Error, "verifying chunk 0") {
				t.Fatalf("run = %+v", st)
			}
			if got := metricValue(t, e.c.m.verifyFail); got != 1 {
				t.Errorf("verification_failures_total = %v", got)
			}
			if ch := e.channel(t, "c"); ch.ArchivedThrough != 0 || len(e.stored(t, "c")) != 8 {
				t.Fatalf("after failed verification: %+v, stored %v", ch, e.stored(t, "c"))
			}
			h.expectComplete(t, "c", 8)
			e.c.hook = nil
			if st := e.run(t, ""); st.Status != StatusSucceeded || st.ChunksArchived != 2 || st.ChunksReused != 0 {
				t.Fatalf("rerun = %+v", st)
			}
			e.expectArchived(t, "c", 8, nil)
			h.expectComplete(t, "c", 8)
		})
	}
}

func TestHistoryReadDuringRun(t *testing.T) {
	for _, sf := range stores[:2] { // memstore, SQLite; FerretDB is too slow for this many reads
		t.Run(sf.name, func(t *testing.T) {
			const (
				last    = 240 // 60 chunks
				readers = 8
			)
			e := newEnv(t, withStore(sf.open(t)))
			e.seed.seed(t, "c", seqRange(1, last), old)
			e.seed.seed(t, "c", seqRange(last+1, last+3), recent)
			h := newHistory(t, e.st, e.cfg)

			var (
				done     atomic.Bool
				pages    atomic.Int64
				walks    atomic.Int64
				wg       sync.WaitGroup
				errsMu   sync.Mutex
				firstErr error
			)
			for i := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(i), 7))
					for !done.Load() {
						asc := rng.IntN(2) == 0
						limit := 3 + rng.IntN(60)
						got, err := h.walk("c", asc, limit)
						if err == nil {
							want := seqRange(1, last+3)
							if !asc {
								slices.Reverse(want)
							}
							if !slices.Equal(got, want) {
								err = fmt.Errorf("walk asc=%v limit %d: %d seqs, want %d", asc, limit, len(got), len(want))
							}
						}
						if err != nil {
							errsMu.Lock()
							if firstErr == nil {
								firstErr = err
							}
							errsMu.Unlock()
							return
						}
						walks.Add(1)
						pages.Add(int64(len(got)+limit-1) / int64(limit))
					}
				}()
			}
			st := e.run(t, "")
			done.Store(true)
			wg.Wait()
			if firstErr != nil {
				t.Fatal(firstErr)
			}
			if st.Status != StatusSucceeded || st.ChunksArchived != last/k || st.MessagesPurged != last {
				t.Fatalf("run = %+v", st)
			}
			t.Logf("%d readers completed %d full walks (%d pages) during the run", readers, walks.Load(), pages.Load())
			h.expectComplete(t, "c", last+3)
		})
	}
}

// leaseStore can make lease renewals report another holder.
type leaseStore struct {
	store.Store
	steal atomic.Bool
}

func (l *leaseStore) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (store.Lease, bool, error) {
	if l.steal.Load() {
		return store.Lease{Name: name, Owner: "intruder", Expires: time.Now().Add(ttl)}, false, nil
	}
	return l.Store.AcquireLease(ctx, name, owner, ttl)
}

func TestOneRunAcrossInstances(t *testing.T) {
	gs := &gatedStore{Store: memstore.New(), gate: make(chan struct{})}
	e := newEnv(t, withStore(gs))
	e.seed.seed(t, "c", seqRange(1, 8), old)
	const ttl = 240 * time.Millisecond
	a := e.newServer(t, func(c *Config) { c.Instance, c.LeaseTTL = "cacher-a", ttl })
	b := e.newServer(t, func(c *Config) { c.Instance, c.LeaseTTL = "cacher-b", ttl })
	sa, sb := httptest.NewServer(a.Handler()), httptest.NewServer(b.Handler())
	defer sa.Close()
	defer sb.Close()
	post := func(base string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(base+"/v1/archive/run", "", nil)
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
	code, body := post(sa.URL)
	if code != http.StatusAccepted || body["started"] != true {
		t.Fatalf("POST to a: %d %v", code, body)
	}
	idA := body["run_id"].(string)
	// While a's run is blocked for several lease lifetimes (so it must be
	// renewing), b refuses to start one and names a.
	for i := 0; i < 3; i++ {
		time.Sleep(ttl)
		code, body = post(sb.URL)
		if code != http.StatusConflict || body["holder"] != "cacher-a" || body["lease_expires_at"] == "" || !strings.Contains(body["error"].(string), "cacher-a") {
			t.Fatalf("POST to b while a runs: %d %v", code, body)
		}
	}
	b.periodic()
	if id := b.currentID(); id != "" {
		t.Fatalf("periodic run started on b while a runs: %s", id)
	}
	if code, body := post(sa.URL); code != http.StatusAccepted || body["run_id"] != idA || body["started"] != false {
		t.Fatalf("second POST to a: %d %v", code, body)
	}
	close(gs.gate)
	if err := a.wait(context.Background(), idA); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Status(idA); st.Status != StatusSucceeded || st.ChunksArchived != 2 {
		t.Fatalf("a's run: %+v", st)
	}
	// a released the lease at once: b may run now.
	code, body = post(sb.URL)
	if code != http.StatusAccepted || body["started"] != true {
		t.Fatalf("POST to b after a finished: %d %v", code, body)
	}
	if err := b.wait(context.Background(), body["run_id"].(string)); err != nil {
		t.Fatal(err)
	}
	if l, ok, err := e.st.AcquireLease(context.Background(), LeaseName, "probe", time.Second); err != nil || !ok {
		t.Fatalf("lease not released after runs: %+v %v %v", l, ok, err)
	}
}

func TestRunStopsWhenLeaseLost(t *testing.T) {
	ls := &leaseStore{Store: memstore.New()}
	gs := &gatedStore{Store: ls, gate: make(chan struct{})}
	e := newEnv(t, withStore(gs))
	e.seed.seed(t, "c", seqRange(1, 8), old)
	c := e.newServer(t, func(c *Config) { c.LeaseTTL = 60 * time.Millisecond })
	id, started, err := c.Trigger("")
	if err != nil || !started {
		t.Fatal(started, err)
	}
	ls.steal.Store(true) // the next renewal finds another holder
	if err := c.wait(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	st, _ := c.Status(id)
	if st.Status != StatusFailed || !strings.Contains(st.Error, "lost the run lease") || !strings.Contains(st.Error, "intruder") || st.MessagesPurged != 0 {
		t.Fatalf("run = %+v", st)
	}
	c.cancel()
	c.wg.Wait()
}

func TestTriggerStoreDown(t *testing.T) {
	ms := memstore.New()
	e := newEnv(t, withStore(ms))
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	ms.Close()
	resp, err := http.Post(srv.URL+"/v1/archive/run", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !json.Valid(body) {
		t.Fatalf("POST with the store down: %d %s", resp.StatusCode, body)
	}
	if _, err := e.c.RunOnce(context.Background(), ""); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RunOnce with the store down: %v", err)
	}
}
