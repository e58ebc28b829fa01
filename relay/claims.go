package relay

import (
	"strings"
	"sync"

	"github.com/herald-chat/herald/internal/auth"
)

// identity is what a connection keeps of its token: the user and the info
// attached to its publications, and the grants (server-side channels,
// capabilities, admin) as an *auth.Claims shared by every connection with
// the same grants (its other fields are empty). The rest of the decoded
// token is dropped: on an idle connection it would be most of the memory.
type identity struct {
	Subject string
	Info    []byte
	*auth.Claims
}

// setClaims installs the identity of c. The token itself is not kept: a
// history command is sent to management with a grant the relay signs
// (auth.Verifier.HistoryGrant).
func (cl *client) setClaims(c *auth.Claims) {
	cl.claims = &identity{Subject: c.Subject, Info: c.Info, Claims: cl.l.srv.interned.grants(c)}
}

// internTable shares identical, read-only grants between connections. It
// is bounded: past maxInterned distinct grants, new ones are kept per
// connection.
type internTable struct {
	mu sync.Mutex
	m  map[string]*auth.Claims
}

const maxInterned = 10_000

func newInternTable() *internTable { return &internTable{m: map[string]*auth.Claims{}} }

// grants returns the shared claims holding only c's channels, caps and
// admin flag.
func (t *internTable) grants(c *auth.Claims) *auth.Claims {
	var sb strings.Builder
	if c.Admin {
		sb.WriteByte('A')
	}
	sb.WriteString(strings.Join(c.Channels, "\x00"))
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
	g := &auth.Claims{Channels: c.Channels, Caps: c.Caps, Admin: c.Admin}
	if len(t.m) < maxInterned {
		t.m[key] = g
	}
	return g
}
