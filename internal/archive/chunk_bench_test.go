package archive

import "testing"

func BenchmarkEncodeChunk(b *testing.B) {
	msgs := testMessages(b, "team:42", 10, 256)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		out, err := EncodeChunk(msgs)
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size), "gzip-bytes")
}

func BenchmarkDecodeChunk(b *testing.B) {
	msgs := testMessages(b, "team:42", 10, 256)
	enc, err := EncodeChunk(msgs)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := DecodeChunk(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	enc, err := EncodeChunk(testMessages(b, "team:42", 10, 256))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		_ = Checksum(enc)
	}
}
