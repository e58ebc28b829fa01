// Package httpjson is the error shape shared by Herald's HTTP APIs (the
// management REST API, the cacher API and every service's admin server).
//
// Every error response is JSON with Content-Type application/json:
//
//	{"error": "<message>"}                         // always
//	{"error": "<message>", "parameter": "<name>"}  // 400 for one parameter
//
// An API may add fields of its own beside these (the cacher's 409 names the
// lease holder); a client that reads "error" understands every one.
//
// Routes wraps a ServeMux so that requests no pattern matches get this shape
// too (404, and 405 with the Allow header) instead of the mux's plain text,
// and Query rejects query parameters a handler does not declare.
package httpjson

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Error is the body of every error response.
type Error struct {
	// Error says what went wrong, for people.
	Error string `json:"error"`
	// Parameter names the offending request parameter (query parameter or
	// body field) of a 400; omitted otherwise.
	Parameter string `json:"parameter,omitempty"`
}

// Write writes v as JSON with status code. Cache-Control is no-store
// unless the handler set one.
func Write(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes {"error": msg} with status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	Write(w, code, Error{Error: msg})
}

// BadParameter writes 400 {"error": msg, "parameter": param}.
func BadParameter(w http.ResponseWriter, param, msg string) {
	Write(w, http.StatusBadRequest, Error{Error: msg, Parameter: param})
}

// Query parses r's query string and checks that every parameter is one of
// allowed. On a malformed query string or an unknown parameter it answers
// 400 (naming the unknown parameters, the first in "parameter") and
// returns ok=false.
func Query(w http.ResponseWriter, r *http.Request, allowed ...string) (v url.Values, ok bool) {
	if r.URL.RawQuery == "" {
		return url.Values{}, true
	}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		BadParameter(w, "", "malformed query string")
		return v, false
	}
	var unknown []string
	for name := range v {
		if !slices.Contains(allowed, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		return v, true
	}
	slices.Sort(unknown)
	msg := "unknown query parameter " + quoteList(unknown)
	if len(unknown) > 1 {
		msg = "unknown query parameters " + quoteList(unknown)
	}
	if len(allowed) == 0 {
		msg += " (this endpoint takes none)"
	} else {
		msg += " (allowed: " + strings.Join(allowed, ", ") + ")"
	}
	BadParameter(w, unknown[0], msg)
	return v, false
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// Routes serves mux, answering the requests that no pattern of mux matches
// with JSON errors: 404 for an unknown path, 405 (with the mux's Allow
// header) for a known path and another method. The mux's redirects (a
// cleaned path, a missing trailing slash) pass unchanged, and so does
// everything a matched handler writes.
func Routes(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&routeWriter{ResponseWriter: w, r: r}, r)
	})
}

// routeWriter replaces the mux's own 404 and 405 answers. ServeMux sets
// r.Pattern on the request it is given before calling the handler, so an
// empty Pattern at WriteHeader means no pattern matched.
type routeWriter struct {
	http.ResponseWriter
	r       *http.Request
	swallow bool // the mux's plain-text body, replaced by ours
}

func (w *routeWriter) WriteHeader(code int) {
	if w.r.Pattern != "" || (code != http.StatusNotFound && code != http.StatusMethodNotAllowed) {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.swallow = true
	w.Header().Del("X-Content-Type-Options")
	msg := "no such endpoint: " + w.r.Method + " " + w.r.URL.Path
	if code == http.StatusMethodNotAllowed {
		msg = "method " + w.r.Method + " not allowed on " + w.r.URL.Path + " (allowed: " + w.Header().Get("Allow") + ")"
	}
	WriteError(w.ResponseWriter, code, msg)
}

func (w *routeWriter) Write(p []byte) (int, error) {
	if w.swallow {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *routeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
