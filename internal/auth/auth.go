// Package auth verifies and signs Herald's HS256 JWTs: connection tokens
// (claims sub, exp, info, channels, caps, admin) and subscription tokens
// (claims sub, channel, exp). Tokens are never logged.
package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DevSecret is the token secret `herald dev` uses when HERALD_TOKEN_SECRET is
// not set. Other modes refuse to start without an explicit secret.
const DevSecret = "herald-dev-secret-do-not-use-in-production"

// Errors returned by Verify*. ErrExpired is distinguished because the client
// protocol answers it with "token expired" (refreshable) instead of
// "invalid token".
var (
	ErrInvalid = errors.New("invalid token")
	ErrExpired = errors.New("token expired")
)

// Capability grants client-side actions on channels, in the same shape as
// Centrifugo PRO: {"channels":["news","chat:*"],"match":"wildcard",
// "allow":["sub","pub","hst"]}. The first capability whose channels match
// decides.
type Capability struct {
	Channels []string `json:"channels"`
	Match    string   `json:"match,omitempty"` // "" (exact) or "wildcard"
	Allow    []string `json:"allow"`
}

// Permissions a capability may allow.
const (
	AllowSubscribe = "sub"
	AllowPublish   = "pub"
	AllowHistory   = "hst"
	// AllowPresence grants the presence and presence_stats commands.
	AllowPresence = "prs"
)

// Claims of a connection token.
type Claims struct {
	jwt.RegisteredClaims
	Info     json.RawMessage `json:"info,omitempty"`
	Channels []string        `json:"channels,omitempty"`
	Caps     []Capability    `json:"caps,omitempty"`
	Admin    bool            `json:"admin,omitempty"`
}

// SubscriptionClaims of a subscription token.
type SubscriptionClaims struct {
	jwt.RegisteredClaims
	Channel string `json:"channel"`
	// Info is the subscription's info (the presence member's chan_info).
	Info json.RawMessage `json:"info,omitempty"`
}

// HasChannel reports whether channel is one of the token's server-side
// channels.
func (c *Claims) HasChannel(channel string) bool { return slices.Contains(c.Channels, channel) }

// Allows reports whether the first capability matching channel grants perm.
func (c *Claims) Allows(channel, perm string) bool {
	for _, cp := range c.Caps {
		if cp.matches(channel) {
			return slices.Contains(cp.Allow, perm)
		}
	}
	return false
}

func (cp *Capability) matches(channel string) bool {
	for _, pattern := range cp.Channels {
		if cp.Match == "wildcard" {
			if ok, err := path.Match(pattern, channel); err == nil && ok {
				return true
			}
			continue
		}
		if pattern == channel {
			return true
		}
	}
	return false
}

// ExpiresAt returns the token expiry, zero when the token does not expire.
func (c *Claims) ExpiresAt() time.Time {
	if c.RegisteredClaims.ExpiresAt == nil {
		return time.Time{}
	}
	return c.RegisteredClaims.ExpiresAt.Time
}

// Verifier checks tokens signed with one HS256 secret.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
	fast   *fastVerifier
}

// NewVerifier returns a Verifier for secret. It panics on an empty secret:
// configuration validation must catch that first.
func NewVerifier(secret string) *Verifier {
	if secret == "" {
		panic("auth: empty token secret")
	}
	return &Verifier{
		secret: []byte(secret),
		// Only HS256 is accepted: "alg: none" and algorithm confusion fail.
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(leeway)),
		fast:   newFastVerifier([]byte(secret)),
	}
}

func (v *Verifier) keyFunc(*jwt.Token) (any, error) { return v.secret, nil }

// Verify parses a connection token. It requires a non-empty sub.
func (v *Verifier) Verify(token string) (*Claims, error) {
	var c *Claims
	if !v.fast.verify(token, func(fc *fastClaims) {
		c = &Claims{RegisteredClaims: fc.registered(), Info: fc.Info, Channels: fc.Channels, Caps: fc.Caps, Admin: fc.Admin}
	}) {
		c = new(Claims)
		if _, err := v.parser.ParseWithClaims(token, c, v.keyFunc); err != nil {
			return nil, classify(err)
		}
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: missing sub", ErrInvalid)
	}
	return c, nil
}

// VerifySubscription parses a subscription token and checks it was issued
// for user and channel.
func (v *Verifier) VerifySubscription(token, user, channel string) (*SubscriptionClaims, error) {
	var c *SubscriptionClaims
	if !v.fast.verify(token, func(fc *fastClaims) {
		c = &SubscriptionClaims{RegisteredClaims: fc.registered(), Channel: fc.Channel, Info: fc.Info}
	}) {
		c = new(SubscriptionClaims)
		if _, err := v.parser.ParseWithClaims(token, c, v.keyFunc); err != nil {
			return nil, classify(err)
		}
	}
	if c.Subject != user || c.Channel != channel {
		return nil, fmt.Errorf("%w: issued for another user or channel", ErrInvalid)
	}
	return c, nil
}

// HistoryGrant returns a token that lets user read the history of channel
// and nothing else, valid for ttl. The relay sends it to management with a
// history command of a client it has authenticated and authorised, instead
// of keeping every connection's own token (a few hundred bytes each) for
// the rare history command. HS256 is symmetric: whoever verifies can sign.
func (v *Verifier) HistoryGrant(user, channel string, ttl time.Duration) (string, error) {
	c := &Claims{Caps: []Capability{{Channels: []string{channel}, Allow: []string{AllowHistory}}}}
	c.Subject = user
	c.RegisteredClaims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(ttl))
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(v.secret)
}

func classify(err error) error {
	if errors.Is(err, jwt.ErrTokenExpired) {
		return ErrExpired
	}
	return fmt.Errorf("%w: %v", ErrInvalid, err)
}

// Sign returns an HS256 token for claims; it is used by `herald token`, the
// dev mode and tests.
func Sign(secret string, claims jwt.Claims) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// NewClaims builds connection claims for user with a TTL (0 = no expiry).
func NewClaims(user string, channels []string, ttl time.Duration) *Claims {
	c := &Claims{Channels: channels}
	c.Subject = user
	now := time.Now()
	c.IssuedAt = jwt.NewNumericDate(now)
	if ttl > 0 {
		c.RegisteredClaims.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	}
	return c
}
