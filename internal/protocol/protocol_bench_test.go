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
