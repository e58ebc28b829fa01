package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"math"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
)

// The fast path verifies the tokens Herald sees on every connect without
// golang-jwt's per-token garbage (~1.8 KB of its ~2.9 KB: the header map, a
// new HMAC, base64 strings, the token struct), which sets how often a
// relay's GC runs while clients connect and so how far its heap overshoots
// the live connections: RSS per idle connection. It decides only what it
// can prove: a header that is byte for byte one of the canonical HS256
// headers, a signature that matches, claims that decode and are within
// their validity window. Anything else goes to golang-jwt, which gives the
// error, so the fast path accepts a subset of what golang-jwt accepts and
// never rejects on its own (TestFastPathAgrees).

// leeway is the clock skew allowed on exp and nbf (both paths).
const leeway = 5 * time.Second

// canonicalHeaders are the encoded JOSE headers of HS256 tokens as signing
// libraries write them: golang-jwt and jsonwebtoken/PyJWT (alg first), some
// others typ first, and without typ.
var canonicalHeaders = func() []string {
	var out []string
	for _, h := range []string{`{"alg":"HS256","typ":"JWT"}`, `{"typ":"JWT","alg":"HS256"}`, `{"alg":"HS256"}`} {
		out = append(out, base64.RawURLEncoding.EncodeToString([]byte(h)))
	}
	return out
}()

// hs256SigLen is the encoded length of an HS256 signature (32 bytes).
var hs256SigLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// maxFastPayload bounds the decoded claims the fast path handles in a
// pooled buffer; larger tokens take the general path.
const maxFastPayload = 8 << 10

// fastVerifier holds the pooled state of the fast path.
type fastVerifier struct {
	macs   sync.Pool // hash.Hash: HMAC-SHA256 keyed with the secret
	bufs   sync.Pool // *[]byte: decoded claims
	claims sync.Pool // *fastClaims
}

func newFastVerifier(secret []byte) *fastVerifier {
	key := append([]byte(nil), secret...)
	return &fastVerifier{
		macs:   sync.Pool{New: func() any { return hmac.New(sha256.New, key) }},
		bufs:   sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }},
		claims: sync.Pool{New: func() any { return new(fastClaims) }},
	}
}

// fastClaims is what both token kinds may carry, decoded in one pass;
// times as plain numbers: golang-jwt's NumericDate runs a nested
// json.Unmarshal per date.
type fastClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  jwt.ClaimStrings `json:"aud"`
	ExpiresAt *float64         `json:"exp"`
	NotBefore *float64         `json:"nbf"`
	IssuedAt  *float64         `json:"iat"`
	ID        string           `json:"jti"`

	Info     json.RawMessage `json:"info"`
	Channels []string        `json:"channels"`
	Caps     []Capability    `json:"caps"`
	Admin    bool            `json:"admin"`

	Channel string `json:"channel"` // subscription tokens
}

// registered returns the registered claims as golang-jwt decodes them.
func (fc *fastClaims) registered() jwt.RegisteredClaims {
	return jwt.RegisteredClaims{
		Issuer: fc.Issuer, Subject: fc.Subject, Audience: fc.Audience, ID: fc.ID,
		ExpiresAt: numericDate(fc.ExpiresAt), NotBefore: numericDate(fc.NotBefore), IssuedAt: numericDate(fc.IssuedAt),
	}
}

// dateOf converts seconds since the epoch as golang-jwt's
// NumericDate.UnmarshalJSON does.
func dateOf(sec float64) time.Time {
	round, frac := math.Modf(sec)
	return time.Unix(int64(round), int64(frac*1e9)).Truncate(jwt.TimePrecision)
}

func numericDate(sec *float64) *jwt.NumericDate {
	if sec == nil {
		return nil
	}
	return &jwt.NumericDate{Time: dateOf(*sec)}
}

// verify hands token's claims to use and reports true when the token is
// valid; false means undecided. use must copy what it keeps of fc: the
// struct goes back to the pool (its values are never reused: each decode
// starts from zero).
func (f *fastVerifier) verify(token string, use func(fc *fastClaims)) bool {
	fc := f.claims.Get().(*fastClaims)
	defer f.claims.Put(fc)
	*fc = fastClaims{} // nil slices: Unmarshal would reuse their arrays
	if !f.decode(token, fc) {
		return false
	}
	use(fc)
	return true
}

// decode fills fc and reports whether the token is valid; false leaves fc
// partly filled.
func (f *fastVerifier) decode(token string, fc *fastClaims) bool {
	header, rest, ok := strings.Cut(token, ".")
	if !ok || !isCanonicalHeader(header) {
		return false
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || len(sig) != hs256SigLen || len(payload) > base64.RawURLEncoding.EncodedLen(maxFastPayload) {
		return false
	}
	var want [sha256.Size]byte
	if n, err := base64.RawURLEncoding.Decode(want[:], bytesOf(sig)); err != nil || n != sha256.Size {
		return false
	}
	var got [sha256.Size]byte
	mac := f.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write(bytesOf(token[:len(header)+1+len(payload)]))
	mac.Sum(got[:0])
	f.macs.Put(mac)
	if !hmac.Equal(got[:], want[:]) {
		return false
	}

	bp := f.bufs.Get().(*[]byte)
	defer f.bufs.Put(bp)
	buf := (*bp)[:cap(*bp)]
	if need := base64.RawURLEncoding.DecodedLen(len(payload)); need > len(buf) {
		buf = make([]byte, need)
		*bp = buf[:0]
	}
	n, err := base64.RawURLEncoding.Decode(buf, bytesOf(payload))
	if err != nil {
		return false
	}
	// Unmarshal copies what it keeps (strings, json.RawMessage), so the
	// buffer can go back to the pool.
	if json.Unmarshal(buf[:n], fc) != nil {
		return false
	}
	// The validity window exactly as golang-jwt's Validator computes it
	// (exp and nbf through the same NumericDate conversion).
	now := time.Now()
	if fc.ExpiresAt != nil && !now.Before(dateOf(*fc.ExpiresAt).Add(leeway)) {
		return false
	}
	if fc.NotBefore != nil && now.Before(dateOf(*fc.NotBefore).Add(-leeway)) {
		return false
	}
	return true
}

func isCanonicalHeader(h string) bool {
	for _, c := range canonicalHeaders {
		if h == c {
			return true
		}
	}
	return false
}

// bytesOf views s as bytes without copying; the callee must only read them.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
