package auth

import (
	"testing"
	"time"
)

// BenchmarkVerify verifies one connection token (HS256, two channels, info):
// the relay does this once per connect, management once per request, so it
// bounds connect storms and history req/s.
func BenchmarkVerify(b *testing.B) {
	const secret = "bench-secret"
	c := NewClaims("user-12345", []string{"chat:lobby", "chat:room-42"}, time.Hour)
	c.Info = []byte(`{"name":"Ann"}`)
	tok, err := Sign(secret, c)
	if err != nil {
		b.Fatal(err)
	}
	v := NewVerifier(secret)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
