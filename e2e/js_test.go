package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/testutil"
)

// jsDir is resolved at start-up: the embedded S3 gateway (versitygw's POSIX
// backend) changes the process working directory when a stack starts.
var jsDir = func() string {
	d, err := filepath.Abs("js")
	if err != nil {
		panic(err)
	}
	return d
}()

// TestCentrifugeJS drives Herald with the official JavaScript SDK
// (npm centrifuge + ws on node): server-side and client-side (caps)
// subscriptions, publish, and history. `make test` installs the npm
// packages first; the test fails (not skips) when they are missing, so a CI
// that forgot the install step cannot pass.
func TestCentrifugeJS(t *testing.T) {
	node := nodeWithSDK(t)
	st := startStack(t)
	claims := auth.NewClaims("jsuser", []string{"chat:js"}, time.Hour)
	claims.Caps = []auth.Capability{{Channels: []string{"news:*"}, Match: "wildcard", Allow: []string{"sub", "pub", "hst"}}}
	tok, err := auth.Sign(st.TokenSecret, claims)
	if err != nil {
		t.Fatal(err)
	}
	runJSOK(t, node, "smoke.mjs", st.RelayURL, tok, "chat:js", "news:js", "5")
}

// TestCentrifugeJSPresence: centrifuge-js's sub.presence(),
// sub.presenceStats() and the subscription's join and leave events on a
// channel whose namespace has presence and join_leave.
func TestCentrifugeJSPresence(t *testing.T) {
	node := nodeWithSDK(t)
	t.Setenv("HERALD_CHANNEL_NAMESPACES", `{"room":{"presence":true,"join_leave":true}}`)
	st := startStack(t)
	tok := func(user string) string {
		claims := auth.NewClaims(user, nil, time.Hour)
		claims.Caps = []auth.Capability{{Channels: []string{"room:*"}, Match: "wildcard", Allow: []string{"sub"}}}
		claims.Info = json.RawMessage(`{"name":"` + user + `"}`)
		s, err := auth.Sign(st.TokenSecret, claims)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	runJSOK(t, node, "presence.mjs", st.RelayURL, tok("jsa"), tok("jsb"), "room:js")
}

// runJSOK runs the script of jsDir with node and fails unless it exits 0
// and prints "ok":true.
func runJSOK(t *testing.T, node, script string, args ...string) {
	t.Helper()
	cmd := exec.Command(node, append([]string{script}, args...)...)
	cmd.Dir = jsDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("centrifuge-js %s: %v\n%s", script, err, out)
	}
	if !strings.Contains(string(out), `"ok":true`) {
		t.Fatalf("centrifuge-js %s output: %s", script, out)
	}
}

// nodeWithSDK returns node's path; it fails the test (not skips) when node
// or the npm packages are missing, so a CI that forgot the install step
// cannot pass.
func nodeWithSDK(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; it is needed for the centrifuge-js tests (see README)")
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "centrifuge")); err != nil {
		t.Fatal("e2e/js/node_modules is missing: run `npm ci --prefix e2e/js` (make test does)")
	}
	return node
}

// jsEvent is one line recovery.mjs prints.
type jsEvent struct {
	Event         string `json:"event"`
	OK            *bool  `json:"ok"`
	Error         string `json:"error"`
	Server        int    `json:"server"`
	Client        int    `json:"client"`
	Channel       string `json:"channel"`
	WasRecovering bool   `json:"wasRecovering"`
	Recovered     bool   `json:"recovered"`
	line          string // as printed
}

// TestCentrifugeJSRecovery: centrifuge-js with a server-side subscription
// and a client-side one that needs a subscription token loses its
// connection (a reset through a proxy) while publications continue; it
// must reconnect, have both subscriptions recovered by the server, and end
// with every publication exactly once, in order.
func TestCentrifugeJSRecovery(t *testing.T) {
	node := nodeWithSDK(t)
	f := newDropFixture(t)
	n := dropN
	serverCh, clientCh := dropServerCh, dropClientCh

	cmd := exec.Command(node, "recovery.mjs", f.url, f.token, f.subToken, serverCh, clientCh, strconv.Itoa(n))
	cmd.Dir = jsDir
	var stderr testutil.LockedBuffer // written by exec's copier while waitFor may read it
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	events := make(chan jsEvent, 256)
	var transcript strings.Builder // the lines waitFor has read
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ev := jsEvent{line: sc.Text()}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
	}()
	// waitFor reads events until one satisfies ok; the script's own failure
	// or exit ends the test.
	var last jsEvent // the latest progress
	waitFor := func(what string, ok func(jsEvent) bool) jsEvent {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case ev, open := <-events:
				if !open {
					t.Fatalf("centrifuge-js exited while waiting for %s\n%s\nstderr: %s", what, transcript.String(), stderr.String())
				}
				transcript.WriteString(ev.line + "\n")
				if ev.OK != nil && !*ev.OK {
					t.Fatalf("centrifuge-js: %s", ev.Error)
				}
				if ev.Event == "progress" {
					last = ev
				}
				if ok(ev) {
					return ev
				}
			case <-deadline:
				t.Fatalf("waited 30s for %s; last progress: server-side %d, client-side %d of %d\n%s\nstderr: %s", what, last.Server, last.Client, n, transcript.String(), stderr.String())
			}
		}
	}
	waitFor("ready", func(ev jsEvent) bool { return ev.Event == "ready" })
	f.publish(t, 1, 10)
	waitFor("10 live publications on each channel", func(ev jsEvent) bool { return ev.Server >= 10 && ev.Client >= 10 })
	f.proxy.cut()
	waitFor("the client noticing the cut", func(ev jsEvent) bool { return ev.Event == "connecting" })
	f.publish(t, 11, 20) // acked by Kafka while the client is away
	f.proxy.restore()
	resubscribed := map[string]bool{}
	for len(resubscribed) < 2 {
		ev := waitFor("both subscriptions back", func(ev jsEvent) bool { return ev.Event == "subscribed" })
		if !ev.WasRecovering || !ev.Recovered {
			t.Fatalf("%s subscribed again with wasRecovering=%v recovered=%v, want both true\n%s", ev.Channel, ev.WasRecovering, ev.Recovered, transcript.String())
		}
		resubscribed[ev.Channel] = true
	}
	f.publish(t, 21, n)
	// An {"ok":false} line fails in waitFor; then drain until the script exits.
	waitFor("every publication", func(ev jsEvent) bool { return ev.OK != nil })
	for range events {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("centrifuge-js: %v\n%s\nstderr: %s", err, transcript.String(), stderr.String())
	}
}
