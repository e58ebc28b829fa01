package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/assembly"
	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/testutil"
)

// chromiumPath is Debian's chromium; HERALD_CHROMIUM overrides it.
func chromiumPath() string {
	if p := os.Getenv("HERALD_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// TestBrowser runs the chat page (management/webui) in headless Chromium
// through e2e/js/browser.mjs: two pages chat; unread counts; keyboard
// channel switching; joining a channel by name; one page goes offline,
// misses messages and shows them after coming back, once each and in
// order (recovered, no gap); a message with HTML shows as text; a reload
// pages back through history across the S3 archive boundary; phone width;
// no console error anywhere; and a production management (no dev tokens)
// answers POST /dev/token with 404 while its page takes a token from the
// URL fragment. Screenshots go to $HERALD_ARTIFACTS (else a temp dir, logged).
// Like the other JS tests it fails, not skips, when chromium or the npm
// packages are missing.
func TestBrowser(t *testing.T) {
	node := nodeWithSDK(t)
	if _, err := os.Stat(chromiumPath()); err != nil {
		t.Fatalf("chromium is missing at %s: apt-get install -y chromium (.ci/run does)", chromiumPath())
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "playwright-core")); err != nil {
		t.Fatal("e2e/js/node_modules/playwright-core is missing: run `make js-deps`")
	}
	sdk := filepath.Join(jsDir, "..", "..", "management", "webui", "node_modules", "centrifuge")
	if _, err := os.Stat(filepath.Join(sdk, "build", "index.mjs")); err != nil {
		t.Fatal("management/webui/node_modules/centrifuge is missing: run `make web-deps`")
	}
	t.Setenv("HERALD_MANAGEMENT_WEB_SDK_DIR", sdk)
	st := startStack(t)

	prodURL := startProductionManagement(t, st, sdk)
	// The token an embedding app would hand its page.
	prodToken, err := auth.Sign(st.TokenSecret, auth.NewClaims("erin", []string{"chat:lobby"}, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	artifacts := os.Getenv("HERALD_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(os.TempDir(), "herald-browser-artifacts")
	}
	artifacts, _ = filepath.Abs(artifacts)
	arg, _ := json.Marshal(map[string]any{
		"page": st.ManagementURL + "/", "prodPage": prodURL + "/", "prodToken": prodToken,
		"cacher": st.CacherURL, "artifacts": artifacts, "n": 10,
	})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "browser.mjs", string(arg))
	cmd.Dir = jsDir
	cmd.Env = append(os.Environ(), "HERALD_CHROMIUM="+chromiumPath())
	var stderr testutil.LockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		last = sc.Text()
		t.Log(last)
	}
	err = cmd.Wait()
	if err != nil || !strings.Contains(last, `"ok":true`) {
		t.Fatalf("browser test: %v\nlast line: %s\nstderr: %s", err, last, stderr.String())
	}
	t.Logf("screenshots in %s", artifacts)
}

// startProductionManagement runs a second management over the stack's store
// and archive as `herald management` builds it (the assembly, from flags):
// the page on (-management-web), no dev tokens. It returns its base URL.
func startProductionManagement(t *testing.T, st *devstack.Stack, sdk string) string {
	t.Helper()
	var addrs [2]string
	for i := range addrs {
		a, err := devstack.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = a
	}
	addr := addrs[0]
	cmd := assembly.NewManagement()
	if err := cmd.FlagSet().Parse([]string{
		"-management-addr=" + addr, "-management-admin-addr=" + addrs[1],
		"-management-web=true", "-management-api=false", "-management-web-sdk-dir=" + sdk, "-management-web-relay-url=" + st.RelayURL,
		"-s3-endpoint=" + st.S3Endpoint, "-s3-bucket=" + st.Bucket,
		"-s3-access-key=" + st.S3AccessKey, "-s3-secret-key=" + st.S3SecretKey,
		"-archive-chunk-size=" + strconv.Itoa(chunkSize), "-token-secret=" + st.TokenSecret,
	}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	svc, err := cmd.Build(ctx, log, assembly.Deps{Store: st.Store})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- errors.Join(svc.Serve(ctx, log), svc.Close()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("production management: %v", err)
		}
	})
	url := "http://" + addr
	for i := 0; ; i++ {
		resp, err := http.Get(url + "/ui/config.json")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i == 100 {
			t.Fatalf("production management not up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return url
}
