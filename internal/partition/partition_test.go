package partition

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMatchesKafkaPartitioner checks For against franz-go's Kafka-compatible
// murmur2 key partitioner, so records land where the relay expects them.
func TestMatchesKafkaPartitioner(t *testing.T) {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for _, ch := range []string{"", "a", "ab", "abc", "abcd", "chat:lobby", "chat:dev", "news", "room-123456789"} {
		for _, n := range []int32{1, 3, 12, 64} {
			want := int32(p.Partition(&kgo.Record{Key: []byte(ch)}, int(n)))
			if ch == "" {
				continue // empty keys are sticky-random in kgo
			}
			if got := For(ch, n); got != want {
				t.Errorf("For(%q,%d) = %d, kafka partitioner says %d", ch, n, got, want)
			}
		}
	}
}

func BenchmarkFor(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		For("chat:lobby-000123", 12)
	}
}
