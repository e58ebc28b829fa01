package kafka

import (
	"context"
	"strings"
	"testing"
)

func TestTopicCreatedAndPersisted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k, err := Start(ctx, Options{DataDir: dir, Topic: "herald.test", Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Idempotent for the same count; refused for another count.
	if err := EnsureTopic(ctx, k.Brokers(), "herald.test", 3); err != nil {
		t.Fatalf("same count: %v", err)
	}
	if err := EnsureTopic(ctx, k.Brokers(), "herald.test", 4); err == nil || !strings.Contains(err.Error(), "fixed at creation") {
		t.Fatalf("other count: %v", err)
	}
	k.Close()

	// The topic survives a restart on the same data directory.
	k2, err := Start(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	if err := EnsureTopic(ctx, k2.Brokers(), "herald.test", 4); err == nil {
		t.Fatal("topic lost across a restart")
	}
}
