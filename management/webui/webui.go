// Package webui is Herald's chat page: a static page (HTML, CSS and ES
// modules, embedded in the binary) built on the official centrifuge-js
// SDK, served by management on / when enabled (always in `herald dev`,
// with -management-web in production).
//
// The SDK is third-party code and not committed: it is served from the npm
// package installed by `make web-deps` (npm ci in this directory), at
// /vendor/centrifuge.mjs (the package's self-contained ES module build). A
// missing SDK is logged once and answered with a clear error, which the
// page shows instead of a blank screen.
//
// Routes, when enabled:
//
//	GET  /                         the page
//	GET  /ui/{file}                its CSS, JS and icon
//	GET  /ui/config.json           relay URL, whether dev tokens exist, whether the SDK is installed
//	GET  /vendor/centrifuge.mjs    centrifuge-js
//	POST /dev/token                {"name"} → {"token","url","channels"}; only with DevTokens (herald dev)
//
// Without DevTokens (production) /dev/token does not exist (404): the page
// then takes a token from the embedding app (#token=… in the URL).
//
// Concurrency: a UI is safe for concurrent use and starts no goroutine.
package webui

import (
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/internal/httpjson"
)

//go:embed static
var staticFS embed.FS

// startDir is the working directory at start-up: a relative SDKDir is
// resolved against it, because the embedded S3 gateway of `herald dev`
// changes the process working directory before the services start.
var startDir, _ = os.Getwd()

// DefaultSDKDir is where `make web-deps` installs centrifuge-js, relative
// to the repository root (where `make run` starts herald).
const DefaultSDKDir = "management/webui/node_modules/centrifuge"

// sdkFile is the ES module build inside the npm package centrifuge.
const sdkFile = "build/index.mjs"

// Config of the page.
type Config struct {
	// Enabled serves the page. Default false (HERALD_MANAGEMENT_WEB);
	// `herald dev` turns it on.
	Enabled bool
	// SDKDir is the npm package directory of centrifuge-js; relative paths
	// are relative to the directory herald was started in. Default
	// DefaultSDKDir (HERALD_MANAGEMENT_WEB_SDK_DIR).
	SDKDir string
	// RelayURL is the relay WebSocket URL the page connects to. Default
	// empty: ws(s)://<the page's host>:8000/connection/websocket; the
	// page's ?relay= overrides it (HERALD_MANAGEMENT_WEB_RELAY_URL).
	RelayURL string
}

// RegisterFlags binds the config to flags (flag > HERALD_* env > default):
// -management-web, -management-web-sdk-dir, -management-web-relay-url.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	config.Bool(fs, &c.Enabled, "management-web", "HERALD_MANAGEMENT_WEB", false, "serve the chat page on / (herald dev always does)")
	config.String(fs, &c.SDKDir, "management-web-sdk-dir", "HERALD_MANAGEMENT_WEB_SDK_DIR", DefaultSDKDir,
		"directory of the npm package centrifuge (make web-deps installs it), relative to the start directory")
	config.String(fs, &c.RelayURL, "management-web-relay-url", "HERALD_MANAGEMENT_WEB_RELAY_URL", "",
		"relay WebSocket URL for the chat page (empty: the page's host, port 8000)")
}

// Validate reports configuration errors naming the flag and env variable.
func (c *Config) Validate() error {
	if c.RelayURL != "" {
		u, err := url.Parse(c.RelayURL)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("-management-web-relay-url (HERALD_MANAGEMENT_WEB_RELAY_URL) %q: want ws://host:port/path or wss://…", c.RelayURL)
		}
	}
	return nil
}

// DevTokens configures POST /dev/token. Only `herald dev` sets it: it signs
// a token for any name that asks.
type DevTokens struct {
	Secret   string        // HS256 secret of the stack
	RelayURL string        // the relay WebSocket URL handed to the page
	Channels []string      // server-side channels; default chat:lobby, chat:dev
	TTL      time.Duration // default 24h
}

// UI serves the page.
type UI struct {
	cfg     Config
	dev     *DevTokens
	sdkPath string
	log     *slog.Logger
	static  http.Handler

	sdkOnce sync.Once // logs a missing SDK once
}

// New returns the page's handler set; dev may be nil (production).
func New(cfg Config, dev *DevTokens, log *slog.Logger) (*UI, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.SDKDir == "" {
		cfg.SDKDir = DefaultSDKDir
	}
	dir := cfg.SDKDir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(startDir, dir)
	}
	if dev != nil {
		d := *dev
		if len(d.Channels) == 0 {
			d.Channels = []string{"chat:lobby", "chat:dev"}
		}
		if d.TTL <= 0 {
			d.TTL = 24 * time.Hour
		}
		if d.Secret == "" {
			return nil, errors.New("webui: dev tokens need the token secret")
		}
		dev = &d
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("webui: %w", err)
	}
	u := &UI{cfg: cfg, dev: dev, sdkPath: filepath.Join(dir, sdkFile), log: log,
		static: http.StripPrefix("/ui/", http.FileServerFS(sub))}
	if !u.sdkInstalled() {
		u.logMissingSDK()
	}
	return u, nil
}

// Register adds the page's routes to mux.
func (u *UI) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", u.handleIndex)
	mux.HandleFunc("GET /ui/config.json", u.handleConfig)
	mux.Handle("GET /ui/", u.withHeaders(u.static))
	mux.HandleFunc("GET /vendor/centrifuge.mjs", u.handleSDK)
	if u.dev != nil {
		mux.HandleFunc("POST /dev/token", u.handleDevToken)
	}
}

// csp forbids inline scripts and foreign origins: a message that slipped
// through unescaped still could not run code.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; object-src 'none'"

func (u *UI) withHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		h.ServeHTTP(w, r)
	})
}

func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache") // revalidate: the page changes with the binary
}

func (u *UI) handleIndex(w http.ResponseWriter, r *http.Request) {
	b, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		http.Error(w, "page missing from the build", http.StatusInternalServerError)
		return
	}
	setPageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b)
}

// pageConfig is GET /ui/config.json.
type pageConfig struct {
	RelayURL string `json:"relay_url,omitempty"`
	Dev      bool   `json:"dev"`
	SDK      bool   `json:"sdk"`
	SDKHelp  string `json:"sdk_help,omitempty"`
}

func (u *UI) handleConfig(w http.ResponseWriter, r *http.Request) {
	c := pageConfig{RelayURL: u.cfg.RelayURL, Dev: u.dev != nil, SDK: u.sdkInstalled()}
	if u.dev != nil {
		c.RelayURL = browserURL(u.dev.RelayURL, r)
	}
	if !c.SDK {
		c.SDKHelp = u.sdkHelp()
	}
	httpjson.Write(w, http.StatusOK, c)
}

func (u *UI) sdkInstalled() bool {
	st, err := os.Stat(u.sdkPath)
	return err == nil && st.Mode().IsRegular()
}

func (u *UI) sdkHelp() string {
	return fmt.Sprintf("centrifuge-js is not installed at %s: run `make web-deps` (npm ci --prefix management/webui) or set HERALD_MANAGEMENT_WEB_SDK_DIR to the npm package directory of centrifuge", u.sdkPath)
}

func (u *UI) logMissingSDK() {
	u.sdkOnce.Do(func() {
		u.log.Warn("chat page: centrifuge-js missing; the page shows an error until it is installed", "path", u.sdkPath, "fix", "make web-deps")
	})
}

func (u *UI) handleSDK(w http.ResponseWriter, r *http.Request) {
	f, err := os.Open(u.sdkPath)
	if err != nil {
		u.logMissingSDK()
		http.Error(w, u.sdkHelp(), http.StatusServiceUnavailable)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, u.sdkHelp(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "centrifuge.mjs", st.ModTime(), f)
}

// validName is what a dev user may be called: it becomes the token's sub.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$`)

type tokenRequest struct {
	Name string `json:"name"`
}

type tokenResponse struct {
	Token     string   `json:"token"`
	URL       string   `json:"url"`
	Channels  []string `json:"channels"`
	ExpiresAt string   `json:"expires_at"`
}

// handleDevToken signs a connection token for the asked name: server-side
// channels DevTokens.Channels and sub/pub/hst on chat:* (join any room by
// name).
func (u *UI) handleDevToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
	if err := dec.Decode(&req); err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, "body must be JSON like {\"name\":\"alice\"}")
		return
	}
	if !validName.MatchString(req.Name) {
		httpjson.BadParameter(w, "name", "name must be 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit")
		return
	}
	claims := auth.NewClaims(req.Name, u.dev.Channels, u.dev.TTL)
	claims.Caps = []auth.Capability{{Channels: []string{"chat:*"}, Match: "wildcard",
		Allow: []string{auth.AllowSubscribe, auth.AllowPublish, auth.AllowHistory}}}
	info, _ := json.Marshal(map[string]string{"name": req.Name})
	claims.Info = info
	tok, err := auth.Sign(u.dev.Secret, claims)
	if err != nil {
		u.log.Error("signing a dev token", "error", err)
		httpjson.WriteError(w, http.StatusInternalServerError, "could not sign a token")
		return
	}
	httpjson.Write(w, http.StatusOK, tokenResponse{Token: tok, URL: browserURL(u.dev.RelayURL, r), Channels: u.dev.Channels,
		ExpiresAt: claims.RegisteredClaims.ExpiresAt.UTC().Format(time.RFC3339)})
}

// browserURL makes a relay URL listening on an unspecified address
// (0.0.0.0, [::]) usable from the browser: the host becomes the page's.
func browserURL(relay string, r *http.Request) string {
	u, err := url.Parse(relay)
	if err != nil {
		return relay
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return relay
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		reqHost := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			reqHost = h
		}
		u.Host = net.JoinHostPort(reqHost, port)
	}
	return u.String()
}
