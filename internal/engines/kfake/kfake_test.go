package kfake

import (
	"context"
	"github.com/herald-chat/herald/internal/kafka"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestTopicCreatedAndPersisted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k, err := Start(ctx, Options{DataDir: dir, Topic: "herald.test", Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Idempotent for the same count; refused for another count.
	if _, err := kafka.EnsureTopic(ctx, k.Brokers(), "herald.test", 3); err != nil {
		t.Fatalf("same count: %v", err)
	}
	if _, err := kafka.EnsureTopic(ctx, k.Brokers(), "herald.test", 4); err == nil || !strings.Contains(err.Error(), "fixed at creation") {
		t.Fatalf("other count: %v", err)
	}
	k.Close()

	// The topic survives a restart on the same data directory.
	k2, err := Start(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	if _, err := kafka.EnsureTopic(ctx, k2.Brokers(), "herald.test", 4); err == nil {
		t.Fatal("topic lost across a restart")
	}
}

// With a retention set, old records are dropped (kfake keeps everything of
// a topic without an explicit retention.ms); without one they stay.
func TestRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// startOffset produces 10 records and returns the partition's log start
	// offset once it reaches 10 or after wait.
	startOffset := func(k *Kafka, wait time.Duration) int64 {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.DefaultProduceTopic("herald.test"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := range 10 {
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte{byte(i)}}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		var start int64
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) && start < 10 {
			time.Sleep(100 * time.Millisecond)
			offs, err := kadm.NewClient(cl).ListStartOffsets(ctx, "herald.test")
			if err != nil {
				t.Fatal(err)
			}
			o, _ := offs.Lookup("herald.test", 0)
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			start = o.Offset
		}
		return start
	}

	k, err := Start(ctx, Options{Topic: "herald.test", Partitions: 1, Retention: 300 * time.Millisecond, RetentionCheck: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := startOffset(k, 5*time.Second); got != 10 {
		t.Errorf("with a 300ms retention: log start offset %d 5s after producing 10 records, want 10", got)
	}
	k.Close()

	k, err = Start(ctx, Options{Topic: "herald.test", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if got := startOffset(k, time.Second); got != 0 {
		t.Errorf("without retention: log start offset %d, want 0", got)
	}
}
