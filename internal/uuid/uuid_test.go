package uuid

import (
	"regexp"
	"testing"
)

var textForm = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-([47])[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestVersions(t *testing.T) {
	if m := textForm.FindStringSubmatch(Format(NewV4())); m == nil || m[1] != "4" {
		t.Fatalf("v4 %q", Format(NewV4()))
	}
	a := NewV7()
	if m := textForm.FindStringSubmatch(a); m == nil || m[1] != "7" {
		t.Fatalf("v7 %q", a)
	}
	if b := NewV7(); b[:8] < a[:8] {
		t.Fatalf("v7 ids not time-ordered: %s then %s", a, b)
	}
}
