package management

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/management/webui"
)

// TestWebRoutes: the chat page is off by default; -management-web serves
// it; the dev token endpoint exists only with DevTokens (herald dev), so a
// production management answers it 404.
func TestWebRoutes(t *testing.T) {
	base := newEnv(t, envOpts{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name           string
		web            bool
		dev            *webui.DevTokens
		page, devToken int
	}{
		{"default (off)", false, nil, http.StatusNotFound, http.StatusNotFound},
		{"production -management-web", true, nil, http.StatusOK, http.StatusNotFound},
		{"herald dev", true, &webui.DevTokens{Secret: secret, RelayURL: "ws://127.0.0.1:8000/connection/websocket"}, http.StatusOK, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Addr: "127.0.0.1:0", Web: webui.Config{Enabled: tc.web, SDKDir: t.TempDir()}, DevTokens: tc.dev}
			srv, err := New(cfg, base.st, base.arc, auth.NewVerifier(secret), log, nil)
			if err != nil {
				t.Fatal(err)
			}
			h := httptest.NewServer(srv.Handler())
			defer h.Close()
			resp, err := http.Get(h.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.page {
				t.Errorf("GET /: %d, want %d", resp.StatusCode, tc.page)
			}
			resp, err = http.Post(h.URL+"/dev/token", "application/json", strings.NewReader(`{"name":"alice"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.devToken {
				t.Errorf("POST /dev/token: %d, want %d", resp.StatusCode, tc.devToken)
			}
			// The REST API is unaffected.
			resp, err = http.Get(h.URL + "/v1/openapi.json")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /v1/openapi.json: %d", resp.StatusCode)
			}
		})
	}
}
