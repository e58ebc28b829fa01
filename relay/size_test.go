package relay

import (
	"testing"
	"unsafe"
)

// TestClientSizeClass: every connection holds one client and one
// subscription per channel, so their sizes are the relay's memory per idle
// connection. A field that pushes client past 256 bytes puts every
// connection in the 288-byte size class: move rarely used state behind a
// pointer (like fragment) or pack it with the small fields.
func TestClientSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(client{}); n > 256 {
		t.Errorf("client is %d bytes, want at most 256 (Go's 256-byte size class)", n)
	}
	if n := unsafe.Sizeof(subscription{}); n > 80 {
		t.Errorf("subscription is %d bytes, want at most 80", n)
	}
}
