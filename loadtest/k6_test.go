package loadtest

import (
	"os/exec"
	"testing"
)

// TestK6Scripts loads every k6 script under node with stub k6 modules (k6
// itself is not installed here): syntax, imports, options and top-level code.
func TestK6Scripts(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	out, err := exec.Command(node, "k6/check.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("k6 scripts: %v\n%s", err, out)
	}
}
