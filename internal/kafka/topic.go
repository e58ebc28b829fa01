package kafka

// The messages topic is created and checked here for the controllers (at
// start), `herald dev` and the tests, so every place agrees on one rule: the
// partition count is fixed at creation, because channels map to partitions
// by it.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicInfo describes the topic.
type TopicInfo struct {
	Partitions int32
	// ID is the topic's Kafka topic ID (hex), empty when the cluster does not
	// report topic IDs (Kafka before 2.8). It changes when the topic is
	// deleted and created again, i.e. when the message log starts over.
	ID string
}

// EnsureTopic creates topic with the given partition count if it does not exist
// and returns its description. An existing topic with another partition
// count is an error. extra options are added to the admin client's.
func EnsureTopic(ctx context.Context, brokers []string, topic string, partitions int32, extra ...kgo.Opt) (TopicInfo, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, extra...)...)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("creating kafka admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return TopicInfo{}, fmt.Errorf("creating topic %s: %w", topic, err)
	}
	// Describe it in both cases: the creation response may lack the ID.
	for attempt := 0; ; attempt++ {
		details, err := adm.ListTopics(ctx, topic)
		if err != nil {
			return TopicInfo{}, fmt.Errorf("describing topic %s: %w", topic, err)
		}
		d, ok := details[topic]
		if ok && d.Err == nil {
			got := int32(len(d.Partitions))
			if got != partitions {
				return TopicInfo{}, fmt.Errorf("topic %s has %d partitions, configured %d (HERALD_KAFKA_PARTITIONS); the count is fixed at creation", topic, got, partitions)
			}
			info := TopicInfo{Partitions: got}
			if d.ID != (kadm.TopicID{}) {
				info.ID = hex.EncodeToString(d.ID[:])
			}
			return info, nil
		}
		// A just-created topic may take a moment to appear in metadata.
		if attempt >= 50 {
			return TopicInfo{}, fmt.Errorf("describing topic %s: %v", topic, d.Err)
		}
		select {
		case <-ctx.Done():
			return TopicInfo{}, fmt.Errorf("describing topic %s: %w", topic, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
