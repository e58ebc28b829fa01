// Package kafka runs the embedded Kafka of `herald dev` and of the tests:
// kfake (franz-go's in-process Kafka) persisting to a data directory, with
// the messages topic created explicitly (kfake only persists topics that were
// created, not auto-created ones — see PITFALLS.md).
package kafka

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/herald-chat/herald/internal/kafkatopic"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Options configure the embedded Kafka.
type Options struct {
	// Port to listen on (127.0.0.1 only); 0 picks a free port.
	Port int
	// DataDir persists the log; empty keeps everything in memory.
	DataDir string
	// SyncWrites fsyncs every produced batch (slower, crash-proof).
	SyncWrites bool
	// Topic and Partitions create the messages topic if it is missing.
	Topic      string
	Partitions int32
	// GroupMinSessionTimeout lowers the broker's minimum group session
	// timeout so failover tests can use short sessions (0 = kfake default).
	GroupMinSessionTimeout time.Duration
}

// Kafka is a running embedded cluster.
type Kafka struct {
	cluster *kfake.Cluster
}

// Start starts kfake and ensures the topic exists.
func Start(ctx context.Context, o Options) (*Kafka, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(o.Port)}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir))
	}
	if o.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	if o.GroupMinSessionTimeout > 0 {
		opts = append(opts, kfake.GroupMinSessionTimeout(o.GroupMinSessionTimeout))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting embedded kafka on port %d: %w", o.Port, err)
	}
	k := &Kafka{cluster: c}
	if o.Topic != "" {
		if err := EnsureTopic(ctx, k.Brokers(), o.Topic, o.Partitions); err != nil {
			c.Close()
			return nil, err
		}
	}
	return k, nil
}

// Brokers returns the seed broker addresses.
func (k *Kafka) Brokers() []string { return k.cluster.ListenAddrs() }

// Port returns the port of the first broker.
func (k *Kafka) Port() int {
	addr := k.Brokers()[0]
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			p, _ := strconv.Atoi(addr[i+1:])
			return p
		}
	}
	return 0
}

// Close stops the cluster, flushing its data directory.
func (k *Kafka) Close() { k.cluster.Close() }

// EnsureTopic creates topic with the given partition count if it does not
// exist; see kafkatopic.Ensure.
func EnsureTopic(ctx context.Context, brokers []string, topic string, partitions int32) error {
	_, err := kafkatopic.Ensure(ctx, brokers, topic, partitions)
	return err
}
