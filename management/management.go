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
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
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

// Config of the management service.
type Config struct {
	// Addr of the REST API. Default 127.0.0.1:8080 (HERALD_MANAGEMENT_ADDR).
	Addr string
	// CacheBytes bounds the LRU of decoded archive chunks. Default 64 MiB
	// (HERALD_MANAGEMENT_CACHE_BYTES). 0 disables caching only when set
	// explicitly through New's caller; RegisterFlags defaults to 64 MiB.
	CacheBytes int
	// Web is the chat page (package webui), off by default.
	Web webui.Config
	// DevTokens, set only by `herald dev` (no flag), serves the page's
	// POST /dev/token; without it that route is a 404.
	DevTokens *webui.DevTokens
}

// RegisterFlags binds the config to flags (flag > HERALD_* env > default):
// -management-addr, -management-cache-bytes.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &c.Addr, "management-addr", "HERALD_MANAGEMENT_ADDR", "127.0.0.1:8080", "management REST API address")
	config.Int(fs, &c.CacheBytes, "management-cache-bytes", "HERALD_MANAGEMENT_CACHE_BYTES", 64<<20, "bytes of decoded archive chunks cached in memory")
	c.Web.RegisterFlags(fs)
}

// Validate reports configuration errors naming the flag and env variable.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("-management-addr (HERALD_MANAGEMENT_ADDR) %q: %v", c.Addr, err)
	}
	if c.CacheBytes < 0 {
		return fmt.Errorf("-management-cache-bytes (HERALD_MANAGEMENT_CACHE_BYTES) %d: must not be negative", c.CacheBytes)
	}
	return c.Web.Validate()
}

type metrics struct {
	duration    *prometheus.HistogramVec
	chunkReads  *prometheus.CounterVec
	cacheHits   prometheus.Counter
	cacheMiss   prometheus.Counter
	cacheBytes  prometheus.Gauge
	fallbacks   prometheus.Counter
	retries     prometheus.Counter
	notModified prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herald_management_request_duration_seconds", Help: "REST request duration by route pattern and status code.",
			// 0.5 ms (chunk-cache hits) … 8 s (cold S3 reads under load).
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15),
		}, []string{"route", "code"}),
		chunkReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_management_s3_chunk_reads_total", Help: "Archive chunk reads from S3 by result (ok, not_found, corrupt, error).",
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_management_chunk_cache_hits_total", Help: "Chunk reads served from the in-memory cache.",
		}),
		cacheMiss: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_management_chunk_cache_misses_total", Help: "Chunk reads that missed the in-memory cache.",
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_management_chunk_cache_bytes", Help: "Estimated bytes held by the chunk cache.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_management_store_fallbacks_total", Help: "Archived seq ranges served from the store because their chunk was missing or corrupt.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_management_page_retries_total", Help: "Page reads that found seqs purged concurrently (archived meanwhile) and took them from S3 instead.",
		}),
	}
	m.notModified = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_management_not_modified_total", Help: "Immutable (archived) pages answered 304 Not Modified from If-None-Match, without reading S3.",
	})
	for _, c := range []prometheus.Collector{m.duration, m.chunkReads, m.cacheHits, m.cacheMiss, m.cacheBytes, m.fallbacks, m.retries, m.notModified} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering management metrics: %w", err)
		}
	}
	for _, r := range []string{"ok", "not_found", "corrupt", "error"} {
		m.chunkReads.WithLabelValues(r)
	}
	return m, nil
}

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
	web      *webui.UI // nil unless cfg.Web.Enabled
}

// New returns the management service over st and arc; verifier checks the
// bearer tokens.
func New(cfg Config, st store.Store, arc *archive.Client, verifier *auth.Verifier, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
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
	return &Server{
		web: web, cfg: cfg, st: st, arc: arc, verifier: verifier, log: log.With("service", "management"), m: m,
		cache: newChunkCache(int64(cfg.CacheBytes), func(n int64) { m.cacheBytes.Set(float64(n)) }),
		k:     uint64(arc.ChunkSize()),
	}, nil
}

// Run serves the REST API until ctx is cancelled, then shuts down
// gracefully and returns nil.
func (s *Server) Run(ctx context.Context) error {
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

// Handler returns the REST API with request metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/channels/{channel}/messages", s.handleMessages)
	mux.HandleFunc("GET /v1/channels/{channel}", s.handleChannel)
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	if s.web != nil {
		s.web.Register(mux)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		mux.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		s.m.duration.WithLabelValues(route, strconv.Itoa(sw.code)).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errorBody is every error response.
type errorBody struct {
	Error     string `json:"error"`
	Parameter string `json:"parameter,omitempty"`
}

// writeJSON writes v; Cache-Control is no-store unless already set.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func badParam(w http.ResponseWriter, param, msg string) {
	writeJSON(w, http.StatusBadRequest, errorBody{Error: msg, Parameter: param})
}

// authorize checks the bearer token for history access to channel; on
// failure it writes 401/403 and returns false.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, channel string) bool {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: "missing bearer token"})
		return false
	}
	claims, err := s.verifier.Verify(strings.TrimSpace(token))
	if err != nil {
		msg := "invalid token"
		if errors.Is(err, auth.ErrExpired) {
			msg = "token expired"
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald", error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: msg})
		return false
	}
	if claims.Admin || claims.HasChannel(channel) || claims.Allows(channel, auth.AllowHistory) {
		return true
	}
	writeJSON(w, http.StatusForbidden, errorBody{Error: "token does not allow reading the history of this channel"})
	return false
}

// fail maps a read error to a response.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case store.IsNotFound(err):
		writeJSON(w, http.StatusNotFound, errorBody{Error: "channel not found"})
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// client went away; nothing useful to write
		w.WriteHeader(499)
	default:
		s.log.Warn("history read failed", "route", r.Pattern, "error", err)
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "history temporarily unavailable"})
	}
}

type channelResponse struct {
	Channel         string `json:"channel"`
	Epoch           string `json:"epoch"`
	LastSeq         uint64 `json:"last_seq"`
	ArchivedThrough uint64 `json:"archived_through"`
}

func (s *Server) handleChannel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	if !s.authorize(w, r, name) {
		return
	}
	ch, err := s.st.Channel(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, channelResponse{Channel: ch.Name, Epoch: ch.Epoch, LastSeq: ch.LastSeq, ArchivedThrough: ch.ArchivedThrough})
}

// query is a parsed history request. Bounds are exclusive; 0 = none.
type query struct {
	Before uint64 `json:"b,omitempty"`
	After  uint64 `json:"a,omitempty"`
	Asc    bool   `json:"asc,omitempty"`
	Limit  int    `json:"-"`
}

func encodeCursor(q query) string {
	b, _ := json.Marshal(q)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (query, error) {
	var q query
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return q, err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return q, err
	}
	return q, nil
}

// paramError is a 400 answer naming the offending parameter.
type paramError struct{ param, msg string }

// parseQuery validates the query string.
func parseQuery(r *http.Request) (query, *paramError) {
	q := query{Limit: DefaultLimit}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return q, &paramError{"", "malformed query string"}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return q, &paramError{"limit", fmt.Sprintf("limit must be an integer from 1 to %d", MaxLimit)}
		}
		q.Limit = n
	}
	order := v.Get("order")
	switch order {
	case "", "desc":
	case "asc":
		q.Asc = true
	default:
		return q, &paramError{"order", "order must be asc or desc"}
	}
	if c := v.Get("cursor"); c != "" {
		cq, err := decodeCursor(c)
		if err != nil || (cq.Before != 0 && cq.After >= cq.Before) {
			return q, &paramError{"cursor", "malformed cursor"}
		}
		if order != "" && cq.Asc != q.Asc {
			return q, &paramError{"order", "order differs from the cursor's"}
		}
		cq.Limit = q.Limit
		return cq, nil
	}
	if s := v.Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n < 1 {
			return q, &paramError{"before", "before must be a positive integer seq"}
		}
		q.Before = n
	}
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return q, &paramError{"after", "after must be a non-negative integer seq"}
		}
		q.After = n
	}
	if q.Before != 0 && q.After >= q.Before {
		return q, &paramError{"after", "after must be less than before"}
	}
	return q, nil
}

// messageJSON is one message of a history page.
type messageJSON struct {
	ID          string          `json:"id"`
	Channel     string          `json:"channel"`
	Seq         uint64          `json:"seq"`
	Sender      string          `json:"sender"`
	Info        json.RawMessage `json:"info,omitempty"`
	Data        json.RawMessage `json:"data"`
	PublishedAt string          `json:"published_at"`
}

type pageJSON struct {
	Messages   []messageJSON `json:"messages"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	if !s.authorize(w, r, name) {
		return
	}
	q, perr := parseQuery(r)
	if perr != nil {
		badParam(w, perr.param, perr.msg)
		return
	}
	res, err := s.page(r.Context(), name, q, r.Header.Get("If-None-Match"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if res.etag != "" {
		h := w.Header()
		h.Set("ETag", res.etag)
		h.Set("Cache-Control", immutableCacheControl)
		h.Set("Vary", "Authorization")
		if res.notModified {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	msgs, next := res.msgs, res.next
	out := pageJSON{Messages: make([]messageJSON, len(msgs))}
	for i := range msgs {
		m := &msgs[i]
		data := json.RawMessage(m.Data)
		if len(data) == 0 {
			data = json.RawMessage("null")
		}
		out.Messages[i] = messageJSON{
			ID: m.ID, Channel: m.Channel, Seq: m.Seq, Sender: m.Sender,
			Info: json.RawMessage(m.Info), Data: data,
			PublishedAt: m.PublishedAt.UTC().Format(timeLayout),
		}
	}
	if next != nil {
		out.NextCursor = encodeCursor(*next)
	}
	writeJSON(w, http.StatusOK, out)
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
