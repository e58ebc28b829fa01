package httpjson

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func decode(t *testing.T, rec *httptest.ResponseRecorder) Error {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, body %q", ct, rec.Body)
	}
	var e Error
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return e
}

func TestRoutes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			http.Error(w, "handler's own 404", http.StatusNotFound) // a matched handler's answer is left alone
			return
		}
		_, _ = w.Write([]byte("thing " + r.PathValue("id")))
	})
	mux.HandleFunc("POST /run", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	mux.HandleFunc("GET /dir/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("dir")) })
	h := Routes(mux)
	serve := func(method, target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec
	}

	if rec := serve("GET", "/things/7"); rec.Code != 200 || rec.Body.String() != "thing 7" {
		t.Fatalf("matched: %d %q", rec.Code, rec.Body)
	}
	if rec := serve("POST", "/run"); rec.Code != 202 {
		t.Fatalf("matched POST: %d", rec.Code)
	}
	if rec := serve("GET", "/things/missing"); rec.Code != 404 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("a handler's own 404 was rewritten: %d %q", rec.Code, rec.Body)
	}
	rec := serve("GET", "/nope")
	if rec.Code != 404 {
		t.Fatalf("unknown path: %d", rec.Code)
	}
	if e := decode(t, rec); !strings.Contains(e.Error, "GET /nope") {
		t.Errorf("unknown path: %+v", e)
	}
	rec = serve("DELETE", "/run")
	if rec.Code != 405 || rec.Header().Get("Allow") != "POST" {
		t.Fatalf("wrong method: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
	if e := decode(t, rec); !strings.Contains(e.Error, "DELETE") || !strings.Contains(e.Error, "POST") {
		t.Errorf("wrong method: %+v", e)
	}
	rec = serve("POST", "/things/7")
	if rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("wrong method on a GET route: %d Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
	decode(t, rec)
	if rec := serve("GET", "/dir"); rec.Code/100 != 3 || rec.Header().Get("Location") != "/dir/" {
		t.Fatalf("redirect: %d %q", rec.Code, rec.Header().Get("Location"))
	}
}

func TestQuery(t *testing.T) {
	for _, tc := range []struct {
		query   string
		allowed []string
		ok      bool
		param   string
		mention string
	}{
		{"", nil, true, "", ""},
		{"a=1&b=2", []string{"a", "b"}, true, "", ""},
		{"a=1&b=2", []string{"a"}, false, "b", `"b"`},
		{"zz=1&yy=2&a=3", []string{"a"}, false, "yy", `"yy", "zz"`},
		{"x=1", nil, false, "x", "takes none"},
		{"a=%zz", []string{"a"}, false, "", "malformed"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			rec := httptest.NewRecorder()
			v, ok := Query(rec, httptest.NewRequest("GET", "/p?"+tc.query, nil), tc.allowed...)
			if ok != tc.ok {
				t.Fatalf("ok %v, want %v (%d %q)", ok, tc.ok, rec.Code, rec.Body)
			}
			if ok {
				if rec.Body.Len() != 0 || (tc.query != "" && v.Get("a") != "1") {
					t.Fatalf("ok with body %q, values %v", rec.Body, v)
				}
				return
			}
			if rec.Code != 400 {
				t.Fatalf("code %d", rec.Code)
			}
			e := decode(t, rec)
			if e.Parameter != tc.param || !strings.Contains(e.Error, tc.mention) {
				t.Fatalf("got %+v, want parameter %q mentioning %s", e, tc.param, tc.mention)
			}
		})
	}
}
