// Package channelopt holds the per-namespace channel options the relays
// (presence, join/leave) and management (the server API's presence) agree
// on, parsed from one setting, HERALD_CHANNEL_NAMESPACES
// (-channel-namespaces).
//
// A channel's namespace is the part of its name before the first ':'
// ("chat:lobby" is in namespace "chat"); a channel without ':' uses the
// options of the namespace "" (the default). A namespace not configured
// has every option off. The setting is a JSON object from namespace name
// to options, as Centrifugo's namespace options:
//
//	{"": {"presence": true},
//	 "chat": {"presence": true, "join_leave": true},
//	 "room": {"presence": true, "join_leave": true, "force_push_join_leave": true}}
//
// Namespaces is immutable after Parse and safe for concurrent use.
package channelopt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Options are what a namespace enables.
type Options struct {
	// Presence keeps the channel's members (client, user, conn_info,
	// chan_info) across the cluster: the presence and presence_stats
	// commands and the server API's presence answer for it.
	Presence bool `json:"presence,omitempty"`
	// JoinLeave sends join and leave pushes to the subscriptions that ask
	// for them (subscribe join_leave) and to server-side subscriptions.
	// It needs Presence.
	JoinLeave bool `json:"join_leave,omitempty"`
	// ForcePushJoinLeave sends join and leave pushes to every subscription
	// of the channel, asked for or not. It needs JoinLeave.
	ForcePushJoinLeave bool `json:"force_push_join_leave,omitempty"`
}

// Namespaces maps a channel to its options.
type Namespaces struct {
	def Options
	ns  map[string]Options
}

// Parse reads the JSON setting (empty: every option off everywhere). An
// unknown option, join_leave without presence or force_push_join_leave
// without join_leave is an error.
func Parse(s string) (*Namespaces, error) {
	n := &Namespaces{ns: map[string]Options{}}
	if strings.TrimSpace(s) == "" {
		return n, nil
	}
	var raw map[string]Options
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("channel namespaces (-channel-namespaces / HERALD_CHANNEL_NAMESPACES): not a JSON object of namespace options: %w", err)
	}
	for name, o := range raw {
		if strings.Contains(name, ":") {
			return nil, fmt.Errorf("channel namespaces: namespace %q must not contain ':'", name)
		}
		if o.JoinLeave && !o.Presence {
			return nil, fmt.Errorf("channel namespaces: namespace %q: join_leave needs presence", name)
		}
		if o.ForcePushJoinLeave && !o.JoinLeave {
			return nil, fmt.Errorf("channel namespaces: namespace %q: force_push_join_leave needs join_leave", name)
		}
		if name == "" {
			n.def = o
			continue
		}
		n.ns[name] = o
	}
	return n, nil
}

// MustParse is Parse for tests and literals; it panics on an error.
func MustParse(s string) *Namespaces {
	n, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return n
}

// Lookup returns the options of ch's namespace. A nil *Namespaces has
// every option off.
func (n *Namespaces) Lookup(ch string) Options {
	if n == nil {
		return Options{}
	}
	ns, _, ok := strings.Cut(ch, ":")
	if !ok {
		return n.def
	}
	return n.ns[ns]
}

// Any reports whether some namespace enables presence.
func (n *Namespaces) Any() bool {
	if n == nil {
		return false
	}
	if n.def.Presence {
		return true
	}
	for _, o := range n.ns {
		if o.Presence {
			return true
		}
	}
	return false
}
