package kafka

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/uuid"
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

// ProducerOpts are the options every producer of the messages topic (relay,
// server API) shares: records carry their partition (EncodeRecord), acks=all
// with franz-go's idempotent producer, no linger (the relay paces its own
// requests), and a record not acked within deliveryTimeout fails instead of
// being retried forever, so the publisher gets an error, never a false ack.
func ProducerOpts(brokers []string, topic string, deliveryTimeout time.Duration) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordDeliveryTimeout(deliveryTimeout),
	}
}

// NewMessageID returns a new message id: a UUIDv7 (time-ordered) string.
func NewMessageID() string { return uuid.NewV7() }
