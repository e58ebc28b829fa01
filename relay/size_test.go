package relay

import (
	"testing"
	"unsafe"
)

// TestClientSizeClass: every connection holds one client and one
// subscription per channel, so their sizes are the relay's memory per idle
// connection. A field that pushes client past 208 bytes puts every
// connection in the 224-byte size class: move rarely used state behind a
// pointer (like fragment, or connectOp.early) or pack it with the small
// fields.
func TestClientSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(client{}); n > 208 {
		t.Errorf("client is %d bytes, want at most 208 (Go's 208-byte size class)", n)
	}
	if n := unsafe.Sizeof(subscription{}); n > 64 {
		t.Errorf("subscription is %d bytes, want at most 64 (Go's 64-byte size class): what it needs only until it is live belongs in subInit", n)
	}
}

// TestEntrySizeClass: a relay holds one router entry per channel with local
// subscribers; with a personal channel per user that is one per connection.
func TestEntrySizeClass(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n > 96 {
		t.Errorf("router entry is %d bytes, want at most 96 (Go's 96-byte size class)", n)
	}
}
