// Package management is Herald's REST service for non-realtime reads:
// channel state and channel history with cursor pagination.
//
// History reads take seqs at or below the channel's archived-through seq
// from S3 chunks (through an in-memory LRU of decoded chunks bounded in
// bytes) and the rest from the store; a page may span both. Seqs are dense
// (1 … last seq), so a page's expected seqs are known in advance: when the
// store returns fewer (the cacher archived and purged them meanwhile), the
// channel state is re-read to confirm they are archived now and they are
// taken from S3, so a page never has a gap or a duplicate (invariant I5);
// anything else makes the page retry, and 503 after a few attempts. A
// missing or corrupt chunk falls back to the store when the store still
// holds the seqs; otherwise the request fails with 503: a page is complete
// or not served.
//
// Caching: a page whose seqs are all archived and whose bounds do not
// depend on the channel's head (an asc page ending before the head's limit,
// or a page bounded by before ≤ last seq) is immutable: it carries a strong
// ETag (derived from channel, seq range and next cursor, so a conditional
// request is answered 304 without reading S3) and Cache-Control private,
// max-age one year, immutable. Every other response is Cache-Control:
// no-store.
//
// Routes (see openapi.json, served at GET /v1/openapi.json):
//
//	GET /v1/channels/{channel}/messages?before=&after=&limit=&order=&cursor=
//	GET /v1/channels/{channel}
//	POST /api/{method}, POST /api   the server API (api.go), API key auth
//
// Auth: Authorization: Bearer <connection JWT> whose channels hold the
// channel, or whose caps grant "hst" on it, or with admin: true.
//
// Concurrency: a Server is safe for concurrent use; it starts no goroutine
// besides the HTTP server owned by Run.
package management

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/management/webui"
)

//go:embed openapi.json
var openAPI []byte

// Page size limits.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// maxAttempts bounds the re-reads of a page that raced with the cacher.
const maxAttempts = 4

// Server is the management service.
type Server struct {
	cfg      Config
	st       store.Store
	arc      *archive.Client
	verifier *auth.Verifier
	log      *slog.Logger
	m        *metrics
	cache    *chunkCache
	k        uint64
	web      *webui.UI  // nil unless cfg.Web.Enabled
	api      *serverAPI // nil unless cfg.API
}

// New returns the management service over st and arc; verifier checks the
// bearer tokens. kopts are appended to the server API's Kafka client
// options (TLS, SASL).
func New(cfg Config, st store.Store, arc *archive.Client, verifier *auth.Verifier, log *slog.Logger, reg prometheus.Registerer, kopts ...kgo.Opt) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil || arc == nil || verifier == nil {
		return nil, errors.New("management: store, archive client and token verifier are required")
	}
	if log == nil {
		log = slog.Default()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	var web *webui.UI
	if cfg.Web.Enabled {
		if web, err = webui.New(cfg.Web, cfg.DevTokens, log.With("service", "management")); err != nil {
			return nil, err
		}
	}
	s := &Server{
		web: web, cfg: cfg, st: st, arc: arc, verifier: verifier, log: log.With("service", "management"), m: m,
		cache: newChunkCache(int64(cfg.CacheBytes), func(n int64) { m.cacheBytes.Set(float64(n)) }),
		k:     uint64(arc.ChunkSize()),
	}
	if cfg.API {
		if s.api, err = newServerAPI(s, kopts); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run serves the REST API until ctx is cancelled, then shuts down
// gracefully and returns nil.
func (s *Server) Run(ctx context.Context) error {
	if s.api != nil {
		defer s.api.close()
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("management: listening on %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("management listening", "addr", ln.Addr().String(), "chunk_size", s.k, "cache_bytes", s.cfg.CacheBytes)
	select {
	case err := <-errc:
		return fmt.Errorf("management: serving HTTP: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("management: shutting down: %w", err)
	}
	return nil
}

// Ready reports whether the store and the archive are reachable.
func (s *Server) Ready(ctx context.Context) error {
	if err := s.st.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := s.arc.Ping(ctx); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

// errIncomplete: the store lacked seqs of the page (purged concurrently).
var errIncomplete = errors.New("store returned an incomplete range")

// immutableCacheControl is the Cache-Control of immutable (archived)
// pages: private because they need a token.
const immutableCacheControl = "private, max-age=31536000, immutable"

// etagVersion changes whenever the JSON of a page would change for the same
// messages, so cached immutable pages are not mistaken for new ones.
const etagVersion = "h1"

// pageResult is one page: its messages (in response order), the query of
// the next page (nil when there is none) and, for an immutable page, its
// ETag; notModified when that ETag matched If-None-Match (msgs not read).
type pageResult struct {
	msgs        []store.Message
	next        *query
	etag        string
	notModified bool
}

// pageETag identifies the content of an immutable page: its seqs (whose
// messages never change once archived) and its next cursor.
func pageETag(channel string, from, to uint64, asc bool, next *query) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00%v\x00", etagVersion, channel, from, to, asc)
	if next != nil {
		h.Write([]byte(encodeCursor(*next)))
	}
	return `"` + etagVersion + "-" + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}

// etagMatches implements If-None-Match's weak comparison.
func etagMatches(ifNoneMatch, etag string) bool {
	for _, t := range strings.Split(ifNoneMatch, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// page returns one page; ifNoneMatch is the request's If-None-Match.
func (s *Server) page(ctx context.Context, channel string, q query, ifNoneMatch string) (pageResult, error) {
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			s.m.retries.Inc()
		}
		ch, err := s.st.Channel(ctx, channel)
		if err != nil {
			return pageResult{}, err
		}
		lo := q.After + 1
		hi := ch.LastSeq
		if q.Before != 0 && q.Before-1 < hi {
			hi = q.Before - 1
		}
		if q.After >= hi {
			return pageResult{msgs: []store.Message{}}, nil
		}
		limit := uint64(q.Limit)
		var from, to uint64
		if q.Asc {
			from, to = lo, hi
			if hi-lo+1 > limit {
				to = lo + limit - 1
			}
		} else {
			from, to = lo, hi
			if hi-lo+1 > limit {
				from = hi - limit + 1
			}
		}
		var next *query
		if q.Asc && to < hi {
			next = &query{Asc: true, After: to, Before: q.Before}
		}
		if !q.Asc && from > lo {
			next = &query{Before: from, After: q.After}
		}
		// Immutable: every seq archived, and neither end nor cursor depends
		// on the head (an asc page cut by limit, or a before ≤ last seq + 1).
		var etag string
		if to <= ch.ArchivedThrough && ((q.Asc && to < ch.LastSeq) || (q.Before != 0 && q.Before-1 <= ch.LastSeq)) {
			etag = pageETag(channel, from, to, q.Asc, next)
			if ifNoneMatch != "" && etagMatches(ifNoneMatch, etag) {
				s.m.notModified.Inc()
				return pageResult{next: next, etag: etag, notModified: true}, nil
			}
		}
		msgs, err := s.read(ctx, ch, from, to)
		if errors.Is(err, errIncomplete) {
			lastErr = err
			continue
		}
		if err != nil {
			return pageResult{}, err
		}
		if !q.Asc {
			slices.Reverse(msgs)
		}
		return pageResult{msgs: msgs, next: next, etag: etag}, nil
	}
	s.log.Error("history page stayed incomplete after re-reads", "channel", channel, "error", lastErr)
	return pageResult{}, fmt.Errorf("reading history: %w", lastErr)
}

// read returns exactly the messages from … to (ascending) of ch: seqs at or
// below ch.ArchivedThrough from S3 chunks, the rest from the store.
//
// The store is read first, right after the channel state, so a concurrent
// purge has little time to strike. The cacher purges a prefix of a channel
// and only after archived-through covers it, so when the store lacks the
// start of its range those seqs are archived by now: the channel state is
// re-read to confirm it and they are taken from S3 instead, without
// re-reading the page. Anything else missing is errIncomplete.
func (s *Server) read(ctx context.Context, ch store.Channel, from, to uint64) ([]store.Message, error) {
	a := ch.ArchivedThrough
	var tail []store.Message
	if to > a {
		sFrom := max(from, a+1)
		msgs, err := s.st.Messages(ctx, store.Range{Channel: ch.Name, From: sFrom, To: to})
		if err != nil {
			return nil, fmt.Errorf("reading store: %w", err)
		}
		n := uint64(len(msgs))
		if n > to-sFrom+1 || !dense(msgs, to-n+1, to) {
			return nil, errIncomplete
		}
		if b := to - n; b >= sFrom { // seqs sFrom…b were purged meanwhile
			s.m.retries.Inc()
			now, err := s.st.Channel(ctx, ch.Name)
			if err != nil {
				return nil, err
			}
			if now.ArchivedThrough < b {
				return nil, errIncomplete
			}
			a = b
		}
		tail = msgs
	}
	out := make([]store.Message, 0, to-from+1)
	for seq := from; seq <= to && seq <= a; {
		n := (seq - 1) / s.k
		end := min((n+1)*s.k, to, a) // last seq of this chunk to take
		part, err := s.archived(ctx, ch.Name, n, seq, end)
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
		seq = end + 1
	}
	return append(out, tail...), nil
}

// archived returns seqs from … to of chunk n, from the cache or S3, or
// from the store when the chunk is missing or corrupt and the store still
// holds them.
func (s *Server) archived(ctx context.Context, channel string, n, from, to uint64) ([]store.Message, error) {
	msgs, hit, err := s.cache.get(ctx, cacheKey(channel, n), func() ([]store.Message, error) {
		msgs, err := s.arc.GetChunk(ctx, channel, n)
		switch {
		case err == nil:
			s.m.chunkReads.WithLabelValues("ok").Inc()
		case archive.IsNotFound(err):
			s.m.chunkReads.WithLabelValues("not_found").Inc()
		case archive.IsCorrupt(err):
			s.m.chunkReads.WithLabelValues("corrupt").Inc()
		default:
			s.m.chunkReads.WithLabelValues("error").Inc()
		}
		return msgs, err
	})
	if hit {
		s.m.cacheHits.Inc()
	} else {
		s.m.cacheMiss.Inc()
	}
	if err == nil {
		first := n*s.k + 1
		return msgs[from-first : to-first+1], nil
	}
	if !archive.IsNotFound(err) && !archive.IsCorrupt(err) {
		return nil, err
	}
	s.log.Error("archived chunk unreadable; trying the store", "channel", channel, "chunk", n, "error", err)
	stored, serr := s.st.Messages(ctx, store.Range{Channel: channel, From: from, To: to})
	if serr != nil || !dense(stored, from, to) {
		return nil, err
	}
	s.m.fallbacks.Inc()
	return stored, nil
}

func dense(msgs []store.Message, from, to uint64) bool {
	if uint64(len(msgs)) != to-from+1 {
		return false
	}
	for i := range msgs {
		if msgs[i].Seq != from+uint64(i) {
			return false
		}
	}
	return true
}
