package management

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/engines/s3local/s3test"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/sqlite"
)

// History load over real HTTP (loopback TCP, net/http server and client)
// against the management handler with a SQLite store and versitygw:
//
//	go test -run '^$' -bench BenchmarkHistoryHTTP -benchtime 20s ./management
//
// Sub-benchmarks: archived pages from the chunk LRU (warm), archived pages
// from S3 (cache disabled: every page reads and decodes its chunk or
// chunks), pages from the SQLite store (nothing archived), and 304s of
// immutable pages. Each request is a random 50-message page (before=…),
// so pages rarely coincide; 16 concurrent clients. Reported: req/s and
// p50/p99 latency in ms measured by the clients.
func BenchmarkHistoryHTTP(b *testing.B) {
	const (
		chunk    = 256
		messages = 80 * chunk // per channel
		limit    = 50
		clients  = 16
	)
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	acfg := archive.Config{Endpoint: s3test.Endpoint(), Bucket: s3test.Bucket(b), AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, ChunkSize: chunk}
	arc, err := archive.New(ctx, acfg)
	if err != nil {
		b.Fatal(err)
	}
	// Two channels of 20480 messages of ~200 bytes: "arch" wholly archived
	// (and purged from the store), "live" only in the store.
	for _, ch := range []string{"arch", "live"} {
		for from := uint64(1); from <= messages; from += 1024 {
			batch := store.Batch{Partition: 0, NextOffset: int64(from + 1024)}
			for seq := from; seq < from+1024; seq++ {
				batch.Messages = append(batch.Messages, store.Message{
					ID: fmt.Sprintf("01J%023d", seq), Channel: ch, Seq: seq, Sender: fmt.Sprintf("user-%d", seq%97),
					Info:        []byte(`{"name":"Ann Example","avatar":"https://example.invalid/a.png"}`),
					Data:        []byte(fmt.Sprintf(`{"text":"message number %d with some typical chat text in it, about this long","n":%d}`, seq, seq)),
					PublishedAt: time.UnixMilli(1_700_000_000_000 + int64(seq)*1000), Offset: int64(seq),
				})
			}
			batch.Heads = []store.Head{{Channel: ch, Epoch: "e", LastSeq: from + 1023, Offset: int64(from + 1023)}}
			if err := st.WriteBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	for n := uint64(0); n < messages/chunk; n++ {
		msgs, err := st.Messages(ctx, store.Range{Channel: "arch", From: n*chunk + 1, To: (n + 1) * chunk})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := arc.PutChunk(ctx, "arch", n, msgs); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.SetArchivedThrough(ctx, "arch", messages); err != nil {
		b.Fatal(err)
	}
	if _, err := st.Purge(ctx, "arch", messages); err != nil {
		b.Fatal(err)
	}

	c := auth.NewClaims("bench", nil, time.Hour)
	c.Admin = true
	tok, err := auth.Sign(secret, c)
	if err != nil {
		b.Fatal(err)
	}
	serve := func(b *testing.B, cacheBytes int) string {
		srv, err := New(Config{Addr: "127.0.0.1:0", CacheBytes: cacheBytes}, st, arc, auth.NewVerifier(secret),
			slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		b.Cleanup(hs.Close)
		return hs.URL
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	get := func(url string, inm string) (int, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, err
	}
	pageURL := func(base, ch string, before uint64) string {
		return fmt.Sprintf("%s/v1/channels/%s/messages?before=%d&limit=%d", base, ch, before, limit)
	}
	// run drives clients concurrent requests of page(rng) and reports.
	run := func(b *testing.B, want int, page func(rng *rand.Rand) (url, inm string)) {
		var (
			mu   sync.Mutex
			lats []time.Duration
			seed atomic.Uint64
			fail atomic.Value
		)
		b.SetParallelism((clients + 1) / 2) // × GOMAXPROCS (2 here) goroutines
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			rng := rand.New(rand.NewPCG(seed.Add(1), 1))
			var local []time.Duration
			for pb.Next() {
				url, inm := page(rng)
				t0 := time.Now()
				code, err := get(url, inm)
				local = append(local, time.Since(t0))
				if err == nil && code != want {
					err = fmt.Errorf("GET %s: status %d", url, code)
				}
				if err != nil {
					fail.CompareAndSwap(nil, err)
				}
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		})
		elapsed := time.Since(start)
		b.StopTimer()
		if err, _ := fail.Load().(error); err != nil {
			b.Fatal(err)
		}
		slices.Sort(lats)
		q := func(p float64) float64 { return float64(lats[int(float64(len(lats)-1)*p)].Microseconds()) / 1000 }
		b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "req/s")
		b.ReportMetric(q(0.50), "p50-ms")
		b.ReportMetric(q(0.99), "p99-ms")
	}
	randomBefore := func(rng *rand.Rand) uint64 { return uint64(limit + 1 + rng.IntN(messages-limit)) }

	b.Run("archived-lru", func(b *testing.B) {
		base := serve(b, 256<<20)
		for n := uint64(0); n < messages/chunk; n++ { // warm every chunk
			if code, err := get(pageURL(base, "arch", (n+1)*chunk+1), ""); err != nil || code != 200 {
				b.Fatal(code, err)
			}
		}
		run(b, 200, func(rng *rand.Rand) (string, string) { return pageURL(base, "arch", randomBefore(rng)), "" })
	})
	b.Run("archived-s3-nocache", func(b *testing.B) {
		base := serve(b, 0)
		run(b, 200, func(rng *rand.Rand) (string, string) { return pageURL(base, "arch", randomBefore(rng)), "" })
	})
	b.Run("store-sqlite", func(b *testing.B) {
		base := serve(b, 256<<20)
		run(b, 200, func(rng *rand.Rand) (string, string) { return pageURL(base, "live", randomBefore(rng)), "" })
	})
	b.Run("archived-304", func(b *testing.B) {
		base := serve(b, 256<<20)
		type pg struct{ url, etag string }
		var pages []pg
		for i := 0; i < 256; i++ {
			u := pageURL(base, "arch", uint64(limit+1+i*79))
			req, _ := http.NewRequest("GET", u, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			pages = append(pages, pg{u, resp.Header.Get("ETag")})
		}
		run(b, http.StatusNotModified, func(rng *rand.Rand) (string, string) {
			p := pages[rng.IntN(len(pages))]
			return p.url, p.etag
		})
	})
}
