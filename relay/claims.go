package relay

import (
	"strings"
	"sync"

	"github.com/herald-chat/herald/internal/auth"
)

// identity is what a connection keeps of its token: the user and the info
// attached to its publications, its server-side channels, and its other
// grants (capabilities, admin) as an *auth.Claims shared by every
// connection with the same grants (its other fields are empty). The rest of
// the decoded token is dropped: on an idle connection it would be most of
// the memory.
//
// The channels are kept apart from the shared grants because they are
// often per user ("personal:alice"): interning them with the capabilities
// made every such connection's grants unique, each with its own claims and
// table entry (~250 B).
type identity struct {
	Subject string
	Info    []byte
	// channels are the token's server-side channels joined by NUL (a name
	// containing NUL is left out: it would match its parts).
	channels string
	*auth.Claims
}

// HasChannel reports whether ch is one of the token's server-side channels.
func (id *identity) HasChannel(ch string) bool {
	for rest := id.channels; rest != ""; {
		var c string
		c, rest, _ = strings.Cut(rest, "\x00")
		if c == ch {
			return true
		}
	}
	return false
}

// setClaims installs the identity of c. The token itself is not kept: a
// history command is sent to management with a grant the relay signs
// (auth.Verifier.HistoryGrant).
func (cl *client) setClaims(c *auth.Claims) {
	t := cl.l.srv.interned
	cl.claims = &identity{Subject: c.Subject, Info: c.Info, channels: t.channels(c.Channels), Claims: t.grants(c)}
}

// internTable shares identical, read-only grants and channel lists between
// connections. Each map is bounded: past maxInterned distinct values, new
// ones are kept per connection.
type internTable struct {
	mu    sync.Mutex // guards m and chans; a leaf
	m     map[string]*auth.Claims
	chans map[string]string
}

const maxInterned = 10_000

func newInternTable() *internTable {
	return &internTable{m: map[string]*auth.Claims{}, chans: map[string]string{}}
}

// grants returns the shared claims holding only c's caps and admin flag.
func (t *internTable) grants(c *auth.Claims) *auth.Claims {
	var sb strings.Builder
	if c.Admin {
		sb.WriteByte('A')
	}
	sb.WriteByte(3)
	for _, cp := range c.Caps {
		sb.WriteString(strings.Join(cp.Channels, "\x00"))
		sb.WriteByte(1)
		sb.WriteString(cp.Match)
		sb.WriteByte(1)
		sb.WriteString(strings.Join(cp.Allow, "\x00"))
		sb.WriteByte(2)
	}
	key := sb.String()
	t.mu.Lock()
	defer t.mu.Unlock()
	if g, ok := t.m[key]; ok {
		return g
	}
	g := &auth.Claims{Caps: c.Caps, Admin: c.Admin}
	if len(t.m) < maxInterned {
		t.m[key] = g
	}
	return g
}

// channels returns chans joined by NUL, shared when an identical list was
// seen before. A single channel is returned as is: handleConnect then
// swaps it for the router entry's copy of the name, which every subscriber
// of the channel shares (with personal channels, a table entry per user
// would be pure overhead).
func (t *internTable) channels(chans []string) string {
	if len(chans) == 1 && strings.IndexByte(chans[0], 0) < 0 {
		return chans[0]
	}
	var sb strings.Builder
	for _, ch := range chans {
		if strings.IndexByte(ch, 0) >= 0 {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte(0)
		}
		sb.WriteString(ch)
	}
	joined := sb.String()
	if joined == "" {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.chans[joined]; ok {
		return s
	}
	if len(t.chans) < maxInterned {
		t.chans[joined] = joined
	}
	return joined
}
