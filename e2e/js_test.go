package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/auth"
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
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; it is needed for the centrifuge-js test (see README)")
	}
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "centrifuge")); err != nil {
		t.Fatal("e2e/js/node_modules is missing: run `npm ci --prefix e2e/js` (make test does)")
	}
	st := startStack(t)
	claims := auth.NewClaims("jsuser", []string{"chat:js"}, time.Hour)
	claims.Caps = []auth.Capability{{Channels: []string{"news:*"}, Match: "wildcard", Allow: []string{"sub", "pub", "hst"}}}
	tok, err := auth.Sign(st.TokenSecret, claims)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "smoke.mjs", st.RelayURL, tok, "chat:js", "news:js", "5")
	cmd.Dir = jsDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("centrifuge-js: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"ok":true`) {
		t.Fatalf("centrifuge-js output: %s", out)
	}
}
