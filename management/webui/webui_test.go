package webui

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/httpjson"
)

// fakeSDK writes a stand-in centrifuge package and returns its directory.
func fakeSDK(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "build"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, sdkFile), []byte("export class Centrifuge {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newServer(t testing.TB, cfg Config, dev *DevTokens, log *slog.Logger) *httptest.Server {
	t.Helper()
	cfg.Enabled = true
	u, err := New(cfg, dev, log)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	u.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func do(t testing.TB, method, url, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

const secret = "webui-test-secret"

func TestDevToken(t *testing.T) {
	srv := newServer(t, Config{SDKDir: fakeSDK(t)}, &DevTokens{Secret: secret, RelayURL: "ws://127.0.0.1:8000/connection/websocket"}, nil)
	code, h, body := do(t, "POST", srv.URL+"/dev/token", `{"name":"alice"}`)
	if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
		t.Fatalf("POST /dev/token: %d %s %s", code, h.Get("Content-Type"), body)
	}
	var res tokenResponse
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if res.URL != "ws://127.0.0.1:8000/connection/websocket" || strings.Join(res.Channels, ",") != "chat:lobby,chat:dev" {
		t.Fatalf("response %+v", res)
	}
	claims, err := auth.NewVerifier(secret).Verify(res.Token)
	if err != nil {
		t.Fatalf("the token does not verify: %v", err)
	}
	if claims.Subject != "alice" || !claims.HasChannel("chat:lobby") || !claims.HasChannel("chat:dev") {
		t.Fatalf("claims %+v", claims)
	}
	for _, perm := range []string{auth.AllowSubscribe, auth.AllowPublish, auth.AllowHistory} {
		if !claims.Allows("chat:anything", perm) {
			t.Errorf("chat:* does not allow %s", perm)
		}
	}
	if claims.Allows("news:1", auth.AllowSubscribe) || claims.Admin {
		t.Errorf("the dev token grants more than chat:*: %+v", claims)
	}
}

func TestDevTokenRejectsBadNames(t *testing.T) {
	srv := newServer(t, Config{SDKDir: fakeSDK(t)}, &DevTokens{Secret: secret, RelayURL: "ws://x:1/c"}, nil)
	for _, body := range []string{
		`{"name":""}`, `{"name":"a b"}`, `{"name":"<script>"}`, `{"name":"-dash"}`,
		`{"name":"` + strings.Repeat("a", 33) + `"}`, `{"name":"ünï"}`, `not json`, ``,
	} {
		code, h, b := do(t, "POST", srv.URL+"/dev/token", body)
		var e httpjson.Error
		if code != http.StatusBadRequest || h.Get("Content-Type") != "application/json" || json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("body %q: %d %s %s, want a JSON 400", body, code, h.Get("Content-Type"), b)
		}
	}
	if code, _, b := do(t, "POST", srv.URL+"/dev/token", `{"name":"Bob_2.x-y"}`); code != http.StatusOK {
		t.Errorf("a valid name: %d %s", code, b)
	}
}

// TestNoDevTokensInProduction: without DevTokens (production) the token
// endpoint does not exist and the page says it has no dev login.
func TestNoDevTokensInProduction(t *testing.T) {
	srv := newServer(t, Config{SDKDir: fakeSDK(t), RelayURL: "wss://relay.example/connection/websocket"}, nil, nil)
	if code, _, b := do(t, "POST", srv.URL+"/dev/token", `{"name":"alice"}`); code != http.StatusNotFound {
		t.Fatalf("production POST /dev/token: %d %s, want 404", code, b)
	}
	code, _, b := do(t, "GET", srv.URL+"/ui/config.json", "")
	var c pageConfig
	if code != http.StatusOK || json.Unmarshal(b, &c) != nil || c.Dev || !c.SDK || c.RelayURL != "wss://relay.example/connection/websocket" {
		t.Fatalf("config.json: %d %s", code, b)
	}
}

func TestPageAndAssets(t *testing.T) {
	srv := newServer(t, Config{SDKDir: fakeSDK(t)}, nil, nil)
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script type="module" src="/ui/app.js">`},
		{"/ui/app.js", "text/javascript", "textContent"},
		{"/ui/style.css", "text/css", "prefers-color-scheme"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
		{"/vendor/centrifuge.mjs", "text/javascript", "export class Centrifuge"},
	} {
		code, h, b := do(t, "GET", srv.URL+tc.path, "")
		if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), tc.ctype) || !bytes.Contains(b, []byte(tc.contains)) {
			t.Errorf("GET %s: %d %q, %d bytes", tc.path, code, h.Get("Content-Type"), len(b))
		}
		if tc.path != "/vendor/centrifuge.mjs" && !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: no CSP", tc.path)
		}
	}
	if code, _, _ := do(t, "GET", srv.URL+"/ui/nope.js", ""); code != http.StatusNotFound {
		t.Errorf("GET /ui/nope.js: %d", code)
	}
}

// TestMissingSDK: without the npm package the page config says so (the
// page shows the help), the SDK URL answers a clear 503, and the server
// logs it once.
func TestMissingSDK(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	srv := newServer(t, Config{SDKDir: filepath.Join(t.TempDir(), "absent")}, nil, log)
	code, _, b := do(t, "GET", srv.URL+"/ui/config.json", "")
	var c pageConfig
	if code != http.StatusOK || json.Unmarshal(b, &c) != nil || c.SDK || !strings.Contains(c.SDKHelp, "make web-deps") {
		t.Fatalf("config.json: %d %s", code, b)
	}
	for range 3 {
		code, _, b = do(t, "GET", srv.URL+"/vendor/centrifuge.mjs", "")
		if code != http.StatusServiceUnavailable || !strings.Contains(string(b), "make web-deps") {
			t.Fatalf("GET /vendor/centrifuge.mjs: %d %s", code, b)
		}
	}
	if n := strings.Count(logs.String(), "centrifuge-js missing"); n != 1 {
		t.Fatalf("logged the missing SDK %d times, want once:\n%s", n, logs.String())
	}
}

func TestBrowserURL(t *testing.T) {
	for _, tc := range []struct{ relay, host, want string }{
		{"ws://127.0.0.1:8000/connection/websocket", "localhost:8080", "ws://127.0.0.1:8000/connection/websocket"},
		{"ws://0.0.0.0:8000/connection/websocket", "chat.local:8080", "ws://chat.local:8000/connection/websocket"},
		{"ws://[::]:8000/connection/websocket", "10.0.0.5:8080", "ws://10.0.0.5:8000/connection/websocket"},
		{"ws://:8000/connection/websocket", "[::1]:8080", "ws://[::1]:8000/connection/websocket"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tc.host
		if got := browserURL(tc.relay, r); got != tc.want {
			t.Errorf("browserURL(%s, host %s) = %s, want %s", tc.relay, tc.host, got, tc.want)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Setenv("HERALD_MANAGEMENT_WEB", "")
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if c.Enabled || c.SDKDir != DefaultSDKDir || c.RelayURL != "" {
		t.Fatalf("defaults %+v", c)
	}
	if err := fs.Parse([]string{"-management-web", "-management-web-relay-url", "http://x"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "HERALD_MANAGEMENT_WEB_RELAY_URL") {
		t.Fatalf("Validate of an http relay URL: %v", err)
	}
	c.RelayURL = "wss://relay.example/connection/websocket"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, &DevTokens{}, nil); err == nil {
		t.Fatal("New accepted dev tokens without a secret")
	}
}
