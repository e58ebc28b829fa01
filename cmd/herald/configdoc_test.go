package main

import (
	"os"
	"strings"
	"testing"
)

// TestConfigurationDocUpToDate fails when a flag was added, renamed or given
// another default without docs/configuration.md following. Regenerate with
// `make docs` (HERALD_UPDATE_DOCS=1).
func TestConfigurationDocUpToDate(t *testing.T) {
	// Defaults come from the environment: document the built-in ones.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "HERALD_") && k != "HERALD_UPDATE_DOCS" {
			t.Setenv(k, "")
		}
	}
	const path = "../../docs/configuration.md"
	got := configDoc()
	if os.Getenv("HERALD_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `make docs`)", err)
	}
	if string(want) != got {
		t.Fatalf("docs/configuration.md is stale: run `make docs`")
	}
}
