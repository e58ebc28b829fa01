package channelopt

import "testing"

func TestLookup(t *testing.T) {
	n := MustParse(`{"": {"presence": true}, "chat": {"presence": true, "join_leave": true}, "room": {"presence": true, "join_leave": true, "force_push_join_leave": true}}`)
	for _, tc := range []struct {
		ch   string
		want Options
	}{
		{"lobby", Options{Presence: true}},
		{"chat:1", Options{Presence: true, JoinLeave: true}},
		{"chat:a:b", Options{Presence: true, JoinLeave: true}},
		{"room:x", Options{Presence: true, JoinLeave: true, ForcePushJoinLeave: true}},
		{"news:x", Options{}},
		{":x", Options{}},
	} {
		t.Run(tc.ch, func(t *testing.T) {
			if got := n.Lookup(tc.ch); got != tc.want {
				t.Errorf("Lookup(%q) = %+v, want %+v", tc.ch, got, tc.want)
			}
		})
	}
	if !n.Any() {
		t.Error("Any() = false")
	}
	var none *Namespaces
	if none.Lookup("chat:1") != (Options{}) || none.Any() {
		t.Error("nil Namespaces has options")
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{
		`[1]`,
		`{"chat": {"presense": true}}`,
		`{"chat": {"join_leave": true}}`,
		`{"chat": {"presence": true, "force_push_join_leave": true}}`,
		`{"a:b": {"presence": true}}`,
	} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%s) accepted", s)
		}
	}
	if n, err := Parse(""); err != nil || n.Any() {
		t.Errorf("Parse(\"\") = %v, %v", n, err)
	}
}
