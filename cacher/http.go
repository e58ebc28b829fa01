package cacher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/httpjson"
	"github.com/herald-chat/herald/internal/store"
)

// maxRunBody bounds the body of POST /v1/archive/run.
const maxRunBody = 64 << 10

// Handler returns the HTTP API. Errors are JSON in the shape of every Herald
// API (internal/httpjson): {"error"} plus "parameter" on a 400.
//
//	POST /v1/archive/run[?channel=]  body: none, {} or {"channel":"…"}
//	                                 (no channel = every channel; the query
//	                                 and the body may both name it only if
//	                                 they agree)
//	                                 → 202 {"run_id":…,"started":bool}
//	                                   (started=false: the run already in
//	                                   progress in this instance);
//	                                   400 malformed body, unknown field or
//	                                   query parameter, conflicting channel;
//	                                   404 unknown channel (checked before
//	                                   anything starts);
//	                                   409 {"error","holder","lease_expires_at"}
//	                                   when another instance runs (not queued);
//	                                   503 + Retry-After when the store is
//	                                   unreachable or shutting down
//	GET  /v1/archive/runs/{id}       → 200 RunStatus, 404 unknown id (runs
//	                                   of this instance only)
//
// Other paths answer 404, other methods 405. With RequireAdmin every
// request needs an admin token: 401 without or with a bad one, 403 for a
// non-admin one.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/archive/run", s.handleRun)
	mux.HandleFunc("GET /v1/archive/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := httpjson.Query(w, r); !ok {
			return
		}
		st, ok := s.Status(r.PathValue("id"))
		if !ok {
			httpjson.WriteError(w, http.StatusNotFound, "unknown run id")
			return
		}
		httpjson.Write(w, http.StatusOK, st)
	})
	h := httpjson.Routes(mux)
	if s.cfg.RequireAdmin {
		return s.adminOnly(h)
	}
	return h
}

// heldError is the 409 body: the shared error shape plus the lease holder.
type heldError struct {
	httpjson.Error
	Holder         string `json:"holder"`
	LeaseExpiresAt string `json:"lease_expires_at"`
}

func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	q, ok := httpjson.Query(w, r, "channel")
	if !ok {
		return
	}
	channel, perr := runChannel(q.Get("channel"), q.Has("channel"), r.Body)
	if perr != nil {
		httpjson.BadParameter(w, perr.param, perr.msg)
		return
	}
	if channel != "" {
		switch _, err := s.st.Channel(r.Context(), channel); {
		case store.IsNotFound(err):
			httpjson.Write(w, http.StatusNotFound, httpjson.Error{Error: fmt.Sprintf("channel %q not found", channel), Parameter: "channel"})
			return
		case err != nil:
			s.log.Warn("archive run not started", "error", err)
			w.Header().Set("Retry-After", "5")
			httpjson.WriteError(w, http.StatusServiceUnavailable, "archive run not started: reading the channel failed")
			return
		}
	}
	id, started, err := s.Trigger(channel)
	var held *HeldElsewhereError
	switch {
	case errors.As(err, &held):
		httpjson.Write(w, http.StatusConflict, heldError{
			Error:  httpjson.Error{Error: held.Error()},
			Holder: held.Lease.Owner, LeaseExpiresAt: held.Lease.Expires.UTC().Format(time.RFC3339Nano),
		})
		return
	case err != nil:
		s.log.Warn("archive run not started", "error", err)
		w.Header().Set("Retry-After", "5")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "archive run not started: "+err.Error())
		return
	}
	w.Header().Set("Location", "/v1/archive/runs/"+id)
	httpjson.Write(w, http.StatusAccepted, map[string]any{"run_id": id, "started": started})
}

type paramError struct{ param, msg string }

// runChannel returns the channel a run request names ("" = every channel)
// from its query (query, given when inQuery) and its body: empty, or a
// JSON object whose only field is "channel" (a string).
func runChannel(query string, inQuery bool, body io.Reader) (string, *paramError) {
	b, err := io.ReadAll(io.LimitReader(body, maxRunBody+1))
	switch {
	case err != nil:
		return "", &paramError{"", "reading the body: " + err.Error()}
	case len(b) > maxRunBody:
		return "", &paramError{"", fmt.Sprintf("body larger than %d bytes", maxRunBody)}
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return query, nil
	}
	if b[0] != '{' {
		return "", &paramError{"", `body must be a JSON object such as {"channel":"chat:lobby"} (or empty)`}
	}
	var req struct {
		Channel *string `json:"channel"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return "", &paramError{te.Field, fmt.Sprintf("body field %q must be a %s", te.Field, "string")}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return "", &paramError{field, fmt.Sprintf(`unknown body field %q (the body takes only "channel")`, field)}
		}
		return "", &paramError{"", "malformed JSON body: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", &paramError{"", "malformed JSON body: data after the object"}
	}
	if req.Channel == nil {
		return query, nil
	}
	if inQuery && query != *req.Channel {
		return "", &paramError{"channel", fmt.Sprintf("the query names channel %q and the body %q", query, *req.Channel)}
	}
	return *req.Channel, nil
}

// adminOnly passes on the requests that carry a valid admin token and
// answers the others 401 (no or bad token) or 403 (not an admin).
func (s *Server) adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		token = strings.TrimSpace(token)
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			httpjson.WriteError(w, http.StatusUnauthorized, "missing bearer token: the cacher API needs an admin token (herald token --admin)")
			return
		}
		claims, err := s.cfg.Verifier.Verify(token)
		if err != nil {
			msg := "invalid token"
			if errors.Is(err, auth.ErrExpired) {
				msg = "token expired"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald", error="invalid_token"`)
			httpjson.WriteError(w, http.StatusUnauthorized, msg)
			return
		}
		if !claims.Admin {
			httpjson.WriteError(w, http.StatusForbidden, "the cacher API needs an admin token (herald token --admin)")
			return
		}
		next.ServeHTTP(w, r)
	})
}
