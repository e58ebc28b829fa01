package protocol

import "testing"

func BenchmarkAppendPush(b *testing.B) {
	pub := &Publication{Data: Raw(`{"text":"hello world, this is a chat message"}`), Info: &ClientInfo{User: "user-123", ConnInfo: Raw(`{"name":"Ann"}`)}, Offset: 123456}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPush(buf[:0], "chat:room-1", pub)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendError(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendError(buf[:0], 42, ErrPermissionDenied)
	}
}

func BenchmarkDecodeCommands(b *testing.B) {
	frame := []byte("{\"id\":1,\"publish\":{\"channel\":\"chat:1\",\"data\":{\"text\":\"hi\"}}}\n{}")
	b.ReportAllocs()
	for b.Loop() {
		_ = DecodeCommands(frame, func(*Command) error { return nil })
	}
}

type nopHandler struct{}

func (nopHandler) HandleCommand(*Command) error { return nil }

// BenchmarkDecoder is BenchmarkDecodeCommands through the fast path.
func BenchmarkDecoder(b *testing.B) {
	frame := []byte("{\"id\":1,\"publish\":{\"channel\":\"chat:1\",\"data\":{\"text\":\"hi\"}}}\n{}")
	var d Decoder
	b.ReportAllocs()
	for b.Loop() {
		_ = d.Decode(frame, nopHandler{})
	}
}

// BenchmarkDecoderPong decodes the client's pong {}.
func BenchmarkDecoderPong(b *testing.B) {
	frame := []byte("{}")
	var d Decoder
	b.ReportAllocs()
	for b.Loop() {
		_ = d.Decode(frame, nopHandler{})
	}
}

// connectFrames are what an SDK sends when it connects and subscribes.
var connectFrames = [][]byte{
	[]byte(`{"id":1,"connect":{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEyMzQ1IiwiZXhwIjoxOTAwMDAwMDAwLCJjaGFubmVscyI6WyJjaGF0OmxvYmJ5Il19.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2ln","name":"js","version":"5.2.0"}}`),
	[]byte(`{"id":2,"subscribe":{"channel":"chat:room-42","recover":true,"offset":17,"epoch":"aBcD"}}`),
}

// BenchmarkDecoderConnect decodes a connect and a subscribe through the
// Decoder (fast path), BenchmarkDecodeConnect the same with encoding/json:
// their garbage is paid once per connection.
func BenchmarkDecoderConnect(b *testing.B) {
	var d Decoder
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range connectFrames {
			_ = d.Decode(f, nopHandler{})
		}
	}
}

func BenchmarkDecodeConnect(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range connectFrames {
			_ = DecodeCommands(f, func(*Command) error { return nil })
		}
	}
}
