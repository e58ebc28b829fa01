package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const secret = "test-secret"

func sign(t *testing.T, c jwt.Claims) string {
	t.Helper()
	tok, err := Sign(secret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerify(t *testing.T) {
	v := NewVerifier(secret)
	good := sign(t, NewClaims("alice", []string{"chat:lobby"}, time.Hour))

	c, err := v.Verify(good)
	if err != nil || c.Subject != "alice" || !c.HasChannel("chat:lobby") || c.HasChannel("chat:other") {
		t.Fatalf("good token: %+v, %v", c, err)
	}

	expired := NewClaims("alice", nil, time.Hour)
	expired.RegisteredClaims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","channels":["chat:lobby"]}`)) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + "."
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, NewClaims("alice", nil, time.Hour)).SignedString([]byte(secret))
	otherSecret, _ := Sign("other", NewClaims("alice", nil, time.Hour))

	for name, tc := range map[string]struct {
		token string
		want  error
	}{
		"expired":         {sign(t, expired), ErrExpired},
		"tampered":        {tampered, ErrInvalid},
		"alg none":        {none, ErrInvalid},
		"other algorithm": {hs512, ErrInvalid},
		"other secret":    {otherSecret, ErrInvalid},
		"no sub":          {sign(t, NewClaims("", nil, time.Hour)), ErrInvalid},
		"garbage":         {"not.a.token", ErrInvalid},
		"empty":           {"", ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(tc.token); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifySubscription(t *testing.T) {
	v := NewVerifier(secret)
	c := &SubscriptionClaims{Channel: "news:1"}
	c.Subject = "bob"
	tok := sign(t, c)
	if _, err := v.VerifySubscription(tok, "bob", "news:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifySubscription(tok, "eve", "news:1"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("other user: %v", err)
	}
	if _, err := v.VerifySubscription(tok, "bob", "news:2"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("other channel: %v", err)
	}
}

func TestCapabilitiesFirstMatchWins(t *testing.T) {
	c := &Claims{Caps: []Capability{
		{Channels: []string{"news:secret"}, Allow: []string{AllowHistory}},
		{Channels: []string{"news:*", "chat:*"}, Match: "wildcard", Allow: []string{AllowSubscribe, AllowPublish}},
		{Channels: []string{"news:open"}, Allow: []string{AllowHistory}},
	}}
	for _, tc := range []struct {
		channel, perm string
		want          bool
	}{
		{"news:secret", AllowHistory, true},
		{"news:secret", AllowSubscribe, false}, // first match decides
		{"news:open", AllowSubscribe, true},
		{"news:open", AllowHistory, false}, // shadowed by the wildcard
		{"chat:1", AllowPublish, true},
		{"other", AllowSubscribe, false},
		{"news", AllowSubscribe, false},
	} {
		if got := c.Allows(tc.channel, tc.perm); got != tc.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tc.channel, tc.perm, got, tc.want)
		}
	}
}

// A history grant allows exactly one channel's history (matched literally,
// even when the name looks like a pattern) for its user, and expires.
func TestHistoryGrant(t *testing.T) {
	v := NewVerifier("s3cret")
	tok, err := v.HistoryGrant("ann", "chat:*", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "ann" || !c.Allows("chat:*", AllowHistory) || c.Allows("chat:x", AllowHistory) ||
		c.Allows("chat:*", AllowSubscribe) || c.Allows("chat:*", AllowPublish) || c.HasChannel("chat:*") || c.Admin {
		t.Fatalf("grant claims %+v", c)
	}
	if d := time.Until(c.ExpiresAt()); d <= 0 || d > time.Minute {
		t.Fatalf("grant expires in %v, want within a minute", d)
	}
	if _, err := NewVerifier("other").Verify(tok); err == nil {
		t.Fatal("grant verified with another secret")
	}
	old, _ := v.HistoryGrant("ann", "chat", -time.Minute)
	if _, err := v.Verify(old); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired grant: %v", err)
	}
}
