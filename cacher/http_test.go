package cacher

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/httpjson"
)

type apiResp struct {
	code   int
	header http.Header
	body   []byte
}

func call(tb testing.TB, method, url, token, body string) apiResp {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiResp{resp.StatusCode, resp.Header, b}
}

// errorOf decodes an error body, which must be JSON in the shared shape
// (httpjson.Error), possibly with the cacher's extra 409 fields.
func errorOf(tb testing.TB, r apiResp) httpjson.Error {
	tb.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("%d: Content-Type %q, body %q", r.code, ct, r.body)
	}
	var e httpjson.Error
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		tb.Fatalf("%d: error body %s: %v", r.code, r.body, err)
	}
	return e
}

// POST /v1/archive/run takes the channel from ?channel= or from a JSON body
// {"channel":…} (empty body or {} = every channel), rejects malformed or
// conflicting input with 400 and an unknown channel with 404 before
// anything starts.
func TestRunRequest(t *testing.T) {
	e := newEnv(t)
	e.seed.seed(t, "c", seqRange(1, 9), old)
	e.seed.seed(t, "d", seqRange(1, 4), old)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	run := srv.URL + "/v1/archive/run"

	for _, tc := range []struct {
		name, query, body string
		code              int
		channel, param    string // channel of the started run; parameter of a 400
	}{
		{"no body", "", "", 202, "", ""},
		{"empty object", "", "{}", 202, "", ""},
		{"whitespace", "", " \n ", 202, "", ""},
		{"body channel", "", `{"channel":"c"}`, 202, "c", ""},
		{"null channel", "", `{"channel":null}`, 202, "", ""},
		{"query channel", "?channel=d", "", 202, "d", ""},
		{"query and body agree", "?channel=c", `{"channel":"c"}`, 202, "c", ""},
		{"query and empty object", "?channel=d", `{}`, 202, "d", ""},
		{"query and body differ", "?channel=c", `{"channel":"d"}`, 400, "", "channel"},
		{"malformed", "", `{garbage`, 400, "", ""},
		{"truncated", "", `{"channel":"c"`, 400, "", ""},
		{"not an object", "", `["c"]`, 400, "", ""},
		{"string body", "", `"c"`, 400, "", ""},
		{"trailing data", "", `{"channel":"c"} {}`, 400, "", ""},
		{"wrong type", "", `{"channel":5}`, 400, "", "channel"},
		{"unknown field", "", `{"channel":"c","force":true}`, 400, "", "force"},
		{"unknown query parameter", "?chanel=c", "", 400, "", "chanel"},
		{"malformed query", "?channel=%zz", "", 400, "", ""},
		{"unknown channel in body", "", `{"channel":"nope"}`, 404, "", "channel"},
		{"unknown channel in query", "?channel=nope", "", 404, "", "channel"},
		{"too large", "", `{"channel":"` + strings.Repeat("x", maxRunBody) + `"}`, 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, http.MethodPost, run+tc.query, "", tc.body)
			if r.code != tc.code {
				t.Fatalf("%d %s, want %d", r.code, r.body, tc.code)
			}
			if tc.code != 202 {
				if e := errorOf(t, r); e.Parameter != tc.param {
					t.Fatalf("error %+v, want parameter %q", e, tc.param)
				}
				if e.c.currentID() != "" {
					t.Fatal("a rejected request started a run")
				}
				return
			}
			var body struct {
				RunID   string `json:"run_id"`
				Started bool   `json:"started"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil || !body.Started {
				t.Fatalf("202 body %s: %v", r.body, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.c.wait(ctx, body.RunID); err != nil {
				t.Fatal(err)
			}
			st, _ := e.c.Status(body.RunID)
			if st.Channel != tc.channel || st.Status != StatusSucceeded {
				t.Fatalf("run %+v, want channel %q succeeded", st, tc.channel)
			}
		})
	}
	// The run of one channel touched only it.
	if got := e.channel(t, "d").ArchivedThrough; got != 4 {
		t.Errorf("d archived through %d", got)
	}
}

// Unknown paths, wrong methods and unknown query parameters of the cacher
// API answer JSON errors in the shape of every Herald API.
func TestHTTPAPIErrorsAreJSON(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		code         int
		allow, param string
	}{
		{"GET", "/v1/archive/run", 405, "POST", ""},
		{"DELETE", "/v1/archive/runs/x", 405, "GET, HEAD", ""},
		{"GET", "/v1/nope", 404, "", ""},
		{"POST", "/v1/archive/runs", 404, "", ""},
		{"GET", "/v1/archive/runs/x", 404, "", ""},
		{"GET", "/v1/archive/runs/x?verbose=1", 400, "", "verbose"},
	} {
		r := call(t, tc.method, srv.URL+tc.path, "", "")
		if r.code != tc.code || r.header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q %s, want %d Allow %q", tc.method, tc.path, r.code, r.header.Get("Allow"), r.body, tc.code, tc.allow)
			continue
		}
		if e := errorOf(t, r); e.Parameter != tc.param {
			t.Errorf("%s %s: %+v, want parameter %q", tc.method, tc.path, e, tc.param)
		}
	}
}

// The flags' defaults (what `herald cacher` runs with) require an admin
// token: without a token secret the configuration is refused, naming both
// the secret and the explicit opt-out; with one, anonymous requests get
// 401 JSON. -cacher-require-admin=false (or the env variable) opens the API.
func TestProductionDefaultsRequireAdmin(t *testing.T) {
	t.Setenv("HERALD_CACHER_REQUIRE_ADMIN", "")
	flags := func(args ...string) Config {
		var c Config
		fs := flag.NewFlagSet("cacher", flag.ContinueOnError)
		c.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		c.Addr, c.ChunkSize = "127.0.0.1:0", k
		return c
	}
	def := flags()
	if !def.RequireAdmin {
		t.Fatal("RequireAdmin is off by default")
	}
	if err := def.Validate(); err == nil || !strings.Contains(err.Error(), "HERALD_TOKEN_SECRET") || !strings.Contains(err.Error(), "-cacher-require-admin=false") {
		t.Fatalf("default config without a secret: %v", err)
	}

	const secret = "cacher-default-secret"
	e := newEnv(t, func(e *env) { e.ccfg = flags(); e.ccfg.Verifier = auth.NewVerifier(secret) })
	srv := httptest.NewServer(e.c.Handler())
	defer srv.Close()
	r := call(t, http.MethodPost, srv.URL+"/v1/archive/run", "", "")
	if r.code != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("anonymous POST with the defaults: %d %s", r.code, r.body)
	}
	errorOf(t, r)
	r = call(t, http.MethodGet, srv.URL+"/v1/nope", "", "")
	if r.code != http.StatusUnauthorized {
		t.Fatalf("anonymous GET of an unknown path: %d", r.code)
	}
	admin := auth.NewClaims("ops", nil, time.Minute)
	admin.Admin = true
	tok, err := auth.Sign(secret, admin)
	if err != nil {
		t.Fatal(err)
	}
	r = call(t, http.MethodPost, srv.URL+"/v1/archive/run", tok, "")
	if r.code != http.StatusAccepted {
		t.Fatalf("admin POST: %d %s", r.code, r.body)
	}
	var body struct {
		RunID string `json:"run_id"`
	}
	_ = json.Unmarshal(r.body, &body)
	_ = e.c.wait(context.Background(), body.RunID)

	for _, open := range []func() Config{
		func() Config { return flags("-cacher-require-admin=false") },
		func() Config { t.Setenv("HERALD_CACHER_REQUIRE_ADMIN", "false"); return flags() },
	} {
		cfg := open()
		if cfg.RequireAdmin || cfg.Validate() != nil {
			t.Fatalf("opt-out: RequireAdmin %v, Validate %v", cfg.RequireAdmin, cfg.Validate())
		}
		o := newEnv(t, func(e *env) { e.ccfg = cfg })
		osrv := httptest.NewServer(o.c.Handler())
		r := call(t, http.MethodPost, osrv.URL+"/v1/archive/run", "", "")
		osrv.Close()
		if r.code != http.StatusAccepted {
			t.Fatalf("anonymous POST with the opt-out: %d %s", r.code, r.body)
		}
		_ = json.Unmarshal(r.body, &body)
		_ = o.c.wait(context.Background(), body.RunID)
	}
}
