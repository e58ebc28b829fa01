// Package uuid makes the UUIDs Herald uses: random (v4) client ids and
// time-ordered (v7) message ids, in their 36-character text form.
package uuid

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewV4 returns a random (v4) UUID.
func NewV4() [16]byte {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return b
}

// NewV7 returns a time-ordered (v7) UUID string: unix milliseconds first,
// so message ids sort by publish time.
func NewV7() string {
	var b [16]byte
	_, _ = rand.Read(b[6:])
	ms := uint64(time.Now().UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	return Format(b)
}

// Format returns b in the text form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
func Format(b [16]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
