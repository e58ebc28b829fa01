package management

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// BenchmarkHistoryPage serves a 50-message page spanning archived chunks
// (warm cache) and the store, through the HTTP handler.
func BenchmarkHistoryPage(b *testing.B) {
	e := newEnv(b, envOpts{})
	e.seed(b, room, 1, 400)
	archiveThrough(b, e.st, e.arc, room, 380)
	h := e.srv.Handler()
	path := messagesPath(room, url.Values{"before": {"401"}, "limit": {"50"}})
	tok := token(b, nil)
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req) // warm the cache
	if w.Code != http.StatusOK {
		b.Fatalf("%d %s", w.Code, w.Body)
	}
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
