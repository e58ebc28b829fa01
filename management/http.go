package management

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/httpjson"
	"github.com/herald-chat/herald/internal/store"
)

// Handler returns the REST API with request metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/channels/{channel}/messages", s.handleMessages)
	mux.HandleFunc("GET /v1/channels/{channel}", s.handleChannel)
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := httpjson.Query(w, r); !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	if s.web != nil {
		s.web.Register(mux)
	}
	if s.api != nil {
		mux.HandleFunc("POST /api", s.api.handle)
		mux.HandleFunc("POST /api/{method}", s.api.handle)
	}
	routes := httpjson.Routes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		routes.ServeHTTP(sw, r)
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

// errorBody is every error response (the shape all Herald HTTP APIs share).
type errorBody = httpjson.Error

// writeJSON writes v; Cache-Control is no-store unless already set.
func writeJSON(w http.ResponseWriter, code int, v any) { httpjson.Write(w, code, v) }

// historyParams are the query parameters of GET /v1/channels/{channel}/messages.
var historyParams = []string{"before", "after", "limit", "order", "cursor"}

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
	if _, ok := httpjson.Query(w, r); !ok {
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

// parseQuery validates the history parameters.
func parseQuery(v url.Values) (query, *paramError) {
	q := query{Limit: DefaultLimit}
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

type pageJSON struct {
	Messages   []store.MessageJSON `json:"messages"` // without client_msg_id
	NextCursor string              `json:"next_cursor,omitempty"`
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	if !s.authorize(w, r, name) {
		return
	}
	v, ok := httpjson.Query(w, r, historyParams...)
	if !ok {
		return
	}
	q, perr := parseQuery(v)
	if perr != nil {
		httpjson.BadParameter(w, perr.param, perr.msg)
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
	out := pageJSON{Messages: make([]store.MessageJSON, len(msgs))}
	for i := range msgs {
		out.Messages[i] = msgs[i].JSON()
		out.Messages[i].ClientMsgID = ""
	}
	if next != nil {
		out.NextCursor = encodeCursor(*next)
	}
	writeJSON(w, http.StatusOK, out)
}
