// Package kfake runs the embedded Kafka of `herald dev` and of the tests:
// kfake (franz-go's in-process Kafka) persisting to a data directory, with
// the messages topic created explicitly (kfake only persists topics that were
// created, not auto-created ones — see PITFALLS.md).
package kfake

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/herald-chat/herald/internal/kafka"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
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
	// Retention is how long the topic keeps records (its retention.ms);
	// 0 keeps them forever. kfake, unlike Kafka, applies no retention to a
	// topic without an explicit retention.ms, so a long-running dev stack
	// would otherwise hold every record ever published in memory.
	Retention time.Duration
	// RetentionCheck is how often retention is applied (Kafka's
	// log.retention.check.interval.ms; default 5m).
	RetentionCheck time.Duration
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
	if o.Retention > 0 {
		check := o.RetentionCheck
		if check <= 0 {
			check = 5 * time.Minute
		}
		// kfake applies retention on its compaction ticker.
		opts = append(opts, kfake.BrokerConfigs(map[string]string{
			"log.cleaner.backoff.ms": strconv.FormatInt(check.Milliseconds(), 10),
		}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting embedded kafka on port %d: %w", o.Port, err)
	}
	k := &Kafka{cluster: c}
	if o.Topic != "" {
		if _, err := kafka.EnsureTopic(ctx, k.Brokers(), o.Topic, o.Partitions); err != nil {
			c.Close()
			return nil, err
		}
		// Set on every start: the topic may come from an earlier run's data
		// directory, created with another retention or none.
		if o.Retention > 0 {
			if err := setRetention(ctx, k.Brokers(), o.Topic, o.Retention); err != nil {
				c.Close()
				return nil, err
			}
		}
	}
	return k, nil
}

// setRetention sets topic's retention.ms.
func setRetention(ctx context.Context, brokers []string, topic string, d time.Duration) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ms := strconv.FormatInt(d.Milliseconds(), 10)
	resp, err := kadm.NewClient(cl).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &ms}}, topic)
	if err == nil {
		for _, r := range resp {
			if r.Err != nil {
				err = r.Err
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("setting retention.ms of topic %s: %w", topic, err)
	}
	return nil
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
