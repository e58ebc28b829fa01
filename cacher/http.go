package cacher

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/herald-chat/herald/internal/auth"
)

// Handler returns the HTTP API:
//
//	POST /v1/archive/run[?channel=]  → 202 {"run_id":…,"started":bool}
//	                                   (started=false: the run already in
//	                                   progress in this instance);
//	                                   409 {"error","holder","lease_expires_at"}
//	                                   when another instance runs (not queued);
//	                                   503 {"error"} + Retry-After when the store
//	                                   is unreachable or shutting down
//	GET  /v1/archive/runs/{id}       → 200 RunStatus, 404 unknown id (runs
//	                                   of this instance only)
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/archive/run", func(w http.ResponseWriter, r *http.Request) {
		id, started, err := s.Trigger(r.URL.Query().Get("channel"))
		var held *HeldElsewhereError
		switch {
		case errors.As(err, &held):
			writeJSON(w, http.StatusConflict, map[string]string{
				"error": held.Error(), "holder": held.Lease.Owner,
				"lease_expires_at": held.Lease.Expires.UTC().Format(time.RFC3339Nano),
			})
			return
		case err != nil:
			s.log.Warn("archive run not started", "error", err)
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "archive run not started: " + err.Error()})
			return
		}
		w.Header().Set("Location", "/v1/archive/runs/"+id)
		writeJSON(w, http.StatusAccepted, map[string]any{"run_id": id, "started": started})
	})
	mux.HandleFunc("GET /v1/archive/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, ok := s.Status(r.PathValue("id"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown run id"})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	if s.cfg.RequireAdmin {
		return s.adminOnly(mux)
	}
	return mux
}

// adminOnly passes on the requests that carry a valid admin token and
// answers the others 401 (no or bad token) or 403 (not an admin).
func (s *Server) adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		token = strings.TrimSpace(token)
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing bearer token: the cacher API needs an admin token (herald token --admin)"})
			return
		}
		claims, err := s.cfg.Verifier.Verify(token)
		if err != nil {
			msg := "invalid token"
			if errors.Is(err, auth.ErrExpired) {
				msg = "token expired"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": msg})
			return
		}
		if !claims.Admin {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "the cacher API needs an admin token (herald token --admin)"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
