package relay

import (
	"testing"
	"unsafe"

	"github.com/herald-chat/herald/internal/auth"
)

// Connections with per-user channels and the same caps share their grants;
// identical channel lists share one string; HasChannel matches whole names
// only.
func TestIdentityInterning(t *testing.T) {
	tab := newInternTable()
	caps := func() []auth.Capability {
		return []auth.Capability{{Channels: []string{"room:*"}, Match: "wildcard", Allow: []string{auth.AllowSubscribe}}}
	}
	ident := func(user string, channels ...string) *identity {
		c := &auth.Claims{Channels: channels, Caps: caps()}
		c.Subject = user
		return &identity{Subject: user, channels: tab.channels(c.Channels), Claims: tab.grants(c)}
	}
	alice, bob := ident("alice", "personal:alice", "news"), ident("bob", "personal:bob", "news")
	if alice.Claims != bob.Claims {
		t.Error("same caps, other channels: grants not shared")
	}
	if alice.Claims.Channels != nil {
		t.Errorf("shared grants hold channels %v", alice.Claims.Channels)
	}
	if !alice.Allows("room:1", auth.AllowSubscribe) || alice.Allows("room:1", auth.AllowPublish) {
		t.Error("caps lost")
	}
	for ch, want := range map[string]bool{"personal:alice": true, "news": true, "personal:bob": false,
		"personal": false, "news\x00personal:alice": false, "": false} {
		if got := alice.HasChannel(ch); got != want {
			t.Errorf("alice HasChannel(%q) = %v, want %v", ch, got, want)
		}
	}
	carol, dave := ident("carol", "news", "sport"), ident("dave", "news", "sport")
	if unsafe.StringData(carol.channels) != unsafe.StringData(dave.channels) {
		t.Error("identical channel lists not shared")
	}
	// A name containing NUL would match its parts: it is left out.
	eve := ident("eve", "a\x00b", "c")
	if eve.HasChannel("a") || eve.HasChannel("b") || eve.HasChannel("a\x00b") || !eve.HasChannel("c") {
		t.Errorf("NUL in a channel name: channels %q", eve.channels)
	}
	// A single channel is not copied (nor kept in the table): handleConnect
	// shares the router entry's string instead.
	name := string([]byte("personal:grace"))
	if grace := ident("grace", name); unsafe.StringData(grace.channels) != unsafe.StringData(name) || !grace.HasChannel("personal:grace") {
		t.Errorf("single channel %q copied", grace.channels)
	}
	if _, kept := tab.chans[name]; kept {
		t.Error("single channel kept in the intern table")
	}
	if none := ident("frank"); none.HasChannel("") || none.channels != "" {
		t.Errorf("no channels: %q", none.channels)
	}
}
