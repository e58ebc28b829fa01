package kafka

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/herald-chat/herald/internal/partition"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// APIHeader is the record header key the server API sets on the records it
// produces (value "1"): the owning controller remembers their seqs by offset
// so that Published can answer them (relays' records pay nothing).
const APIHeader = "herald-api"

// EncodeRecord makes rec the Kafka record of m, as every producer of the
// messages topic must: value = protobuf m, key = channel, partition =
// partition.For(channel, partitions) (Kafka's murmur2, which relays also use
// to find a channel's owner). rec's Key and Value buffers are reused; every
// other field is reset, so franz-go fills in timestamp, offset and producer
// fields. m is only read during the call.
func EncodeRecord(rec *kgo.Record, topic string, partitions int32, m *heraldv1.Message) error {
	value, err := proto.MarshalOptions{}.MarshalAppend(rec.Value[:0], m)
	if err != nil {
		return fmt.Errorf("encoding message: %w", err)
	}
	*rec = kgo.Record{Topic: topic, Key: append(rec.Key[:0], m.Channel...), Value: value, Partition: partition.For(m.Channel, partitions)}
	return nil
}

// NewMessageID returns a new message id: a UUIDv7 (time-ordered) string.
func NewMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[6:])
	ms := uint64(time.Now().UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
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
