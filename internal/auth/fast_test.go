package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// slowVerify is Verify through golang-jwt alone.
func slowVerify(v *Verifier, token string) (*Claims, error) {
	c := new(Claims)
	if _, err := v.parser.ParseWithClaims(token, c, v.keyFunc); err != nil {
		return nil, classify(err)
	}
	if c.Subject == "" {
		return nil, ErrInvalid
	}
	return c, nil
}

func slowVerifySubscription(v *Verifier, token, user, channel string) (*SubscriptionClaims, error) {
	c := new(SubscriptionClaims)
	if _, err := v.parser.ParseWithClaims(token, c, v.keyFunc); err != nil {
		return nil, classify(err)
	}
	if c.Subject != user || c.Channel != channel {
		return nil, ErrInvalid
	}
	return c, nil
}

// hs256 signs header and payload (raw JSON) with secret, as any library
// might: the header is not necessarily golang-jwt's.
func hs256(t testing.TB, header, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(input, []byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	}
	return "other: " + err.Error()
}

// TestFastPathAgrees: Verify and VerifySubscription (fast path, falling
// back to golang-jwt) answer every token as golang-jwt alone does: the same
// outcome and, when valid, the same claims; and the fast path does decide
// the ordinary tokens (else this would test nothing).
func TestFastPathAgrees(t *testing.T) {
	v := NewVerifier(secret)
	now := time.Now().Unix()
	algTyp, typAlg, alg := `{"alg":"HS256","typ":"JWT"}`, `{"typ":"JWT","alg":"HS256"}`, `{"alg":"HS256"}`
	full := fmt.Sprintf(`{"iss":"herald","sub":"ann","aud":["relay","mgmt"],"exp":%d,"nbf":%d,"iat":%d,"jti":"j1",`+
		`"info":{"name":"Ann","n":[1,2]},"channels":["chat:a","chat:b"],"caps":[{"channels":["news:*"],"match":"wildcard","allow":["sub","hst"]}],"admin":true}`,
		now+3600, now-60, now-60)
	cases := []struct {
		name, token string
		fast        bool // the fast path must decide it
	}{
		{"golang-jwt token", sign(t, NewClaims("ann", []string{"chat:a"}, time.Hour)), true},
		{"no expiry", sign(t, NewClaims("ann", nil, 0)), true},
		{"every claim", hs256(t, algTyp, full), true},
		{"typ first", hs256(t, typAlg, full), true},
		{"no typ", hs256(t, alg, full), true},
		{"aud as a string", hs256(t, algTyp, `{"sub":"ann","aud":"relay"}`), true},
		{"fractional exp", hs256(t, algTyp, fmt.Sprintf(`{"sub":"ann","exp":%d.75}`, now+60)), true},
		{"exp within the leeway", hs256(t, algTyp, fmt.Sprintf(`{"sub":"ann","exp":%d}`, now-2)), true},
		{"nbf within the leeway", hs256(t, algTyp, fmt.Sprintf(`{"sub":"ann","nbf":%d}`, now+2)), true},
		{"null exp", hs256(t, algTyp, `{"sub":"ann","exp":null}`), true},
		{"unknown claims", hs256(t, algTyp, `{"sub":"ann","x":{"y":[1,"z"]}}`), true},
		{"no sub", hs256(t, algTyp, `{"channels":["a"]}`), true},

		{"expired", hs256(t, algTyp, fmt.Sprintf(`{"sub":"ann","exp":%d}`, now-60)), false},
		{"not yet valid", hs256(t, algTyp, fmt.Sprintf(`{"sub":"ann","nbf":%d}`, now+60)), false},
		{"exp as a string", hs256(t, algTyp, `{"sub":"ann","exp":"99999999999"}`), false},
		{"exp not a number", hs256(t, algTyp, `{"sub":"ann","exp":"soon"}`), false},
		{"channels not a list", hs256(t, algTyp, `{"sub":"ann","channels":"chat:a"}`), false},
		{"trailing data after the claims", hs256(t, algTyp, `{"sub":"ann"} {"sub":"eve"}`), false},
		{"claims not an object", hs256(t, algTyp, `["ann"]`), false},
		{"other header field", hs256(t, `{"alg":"HS256","typ":"JWT","kid":"k1"}`, `{"sub":"ann"}`), false},
		{"HS512 header, HS256 signature", hs256(t, `{"alg":"HS512","typ":"JWT"}`, `{"sub":"ann"}`), false},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
			base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + ".", false},
		{"empty", "", false},
		{"two parts", "a.b", false},
		{"four parts", sign(t, NewClaims("ann", nil, time.Hour)) + ".x", false},
	}
	good := sign(t, NewClaims("ann", []string{"chat:a"}, time.Hour))
	parts := strings.Split(good, ".")
	cases = append(cases,
		struct {
			name, token string
			fast        bool
		}{"tampered claims", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + "." + parts[2], false},
		struct {
			name, token string
			fast        bool
		}{"tampered signature", parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])), false},
		struct {
			name, token string
			fast        bool
		}{"padded signature", good + "=", false},
		struct {
			name, token string
			fast        bool
		}{"signature not base64", parts[0] + "." + parts[1] + "." + strings.Repeat("*", len(parts[2])), false},
		struct {
			name, token string
			fast        bool
		}{"other secret", func() string { s, _ := Sign("other", NewClaims("ann", nil, time.Hour)); return s }(), false},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if decided := v.fast.verify(tc.token, func(*fastClaims) {}); decided != tc.fast {
				t.Errorf("fast path decided: %v, want %v", decided, tc.fast)
			}
			got, err := v.Verify(tc.token)
			want, wantErr := slowVerify(v, tc.token)
			if errClass(err) != errClass(wantErr) {
				t.Fatalf("Verify: %v; golang-jwt alone: %v", err, wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Verify claims\n%+v\ngolang-jwt alone\n%+v", got, want)
			}
		})
	}

	sub := hs256(t, algTyp, fmt.Sprintf(`{"sub":"bob","channel":"news:1","exp":%d}`, now+60))
	for _, tc := range []struct{ token, user, channel string }{
		{sub, "bob", "news:1"}, {sub, "eve", "news:1"}, {sub, "bob", "news:2"},
		{hs256(t, typAlg, `{"sub":"bob","channel":"news:1"}`), "bob", "news:1"},
		{hs256(t, algTyp, fmt.Sprintf(`{"sub":"bob","channel":"news:1","exp":%d}`, now-60)), "bob", "news:1"},
	} {
		got, err := v.VerifySubscription(tc.token, tc.user, tc.channel)
		want, wantErr := slowVerifySubscription(v, tc.token, tc.user, tc.channel)
		if errClass(err) != errClass(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("VerifySubscription(%s, %s): %+v, %v; golang-jwt alone: %+v, %v", tc.user, tc.channel, got, err, want, wantErr)
		}
	}
}

// The pooled claims never leak one token's values into another's.
func TestFastPathNoCarryOver(t *testing.T) {
	v := NewVerifier(secret)
	rich := hs256(t, `{"alg":"HS256","typ":"JWT"}`, `{"sub":"ann","channels":["a","b"],"info":{"x":1},"caps":[{"channels":["c"],"allow":["sub"]}],"admin":true}`)
	bare := hs256(t, `{"alg":"HS256","typ":"JWT"}`, `{"sub":"bob"}`)
	for range 3 {
		a, err := v.Verify(rich)
		if err != nil || len(a.Channels) != 2 || !a.Admin {
			t.Fatalf("rich: %+v, %v", a, err)
		}
		b, err := v.Verify(bare)
		if err != nil || b.Channels != nil || b.Info != nil || b.Caps != nil || b.Admin {
			t.Fatalf("bare token got another token's claims: %+v, %v", b, err)
		}
		if a.Channels[0] != "a" || a.Channels[1] != "b" || string(a.Info) != `{"x":1}` {
			t.Fatalf("earlier claims changed: %+v", a)
		}
	}
}

// FuzzFastPathAgrees: any header and claims, signed with the secret (and
// then possibly tampered with), get the same answer from Verify as from
// golang-jwt alone.
func FuzzFastPathAgrees(f *testing.F) {
	now := time.Now().Unix()
	for _, s := range []struct{ header, payload string }{
		{`{"alg":"HS256","typ":"JWT"}`, fmt.Sprintf(`{"sub":"ann","exp":%d,"channels":["a"],"info":{"n":1}}`, now+3600)},
		{`{"typ":"JWT","alg":"HS256"}`, `{"sub":"ann","aud":["x"],"caps":[{"channels":["c:*"],"match":"wildcard","allow":["sub"]}]}`},
		{`{"alg":"HS256"}`, fmt.Sprintf(`{"sub":"ann","nbf":%d.5,"admin":true}`, now-10)},
		{`{"alg":"none"}`, `{"sub":"ann"}`},
		{`{"alg":"HS256","typ":"JWT"}`, `{"sub":"ann","exp":"1"}`},
	} {
		f.Add(s.header, s.payload, false)
		f.Add(s.header, s.payload, true)
	}
	v := NewVerifier(secret)
	f.Fuzz(func(t *testing.T, header, payload string, tamper bool) {
		tok := hs256(t, header, payload)
		if tamper {
			b := []byte(tok)
			b[len(b)/2] ^= 1
			tok = string(b)
		}
		got, err := v.Verify(tok)
		want, wantErr := slowVerify(v, tok)
		if errClass(err) != errClass(wantErr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("Verify: %+v, %v; golang-jwt alone: %+v, %v", got, err, want, wantErr)
		}
	})
}
