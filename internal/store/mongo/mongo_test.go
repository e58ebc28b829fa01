package mongo_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/engines/ferret"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/mongo"
	"github.com/herald-chat/herald/internal/store/storetest"
)

var (
	ferretURI string
	dbCounter atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// HERALD_TEST_MONGO_URI runs the suite against a real MongoDB instead.
	if uri := os.Getenv("HERALD_TEST_MONGO_URI"); uri != "" {
		ferretURI = uri
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "herald-ferret-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	uri, stop, err := ferret.Start(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	ferretURI = uri
	return m.Run()
}

func open(t testing.TB) *mongo.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := fmt.Sprintf("herald_test_%d_%d", os.Getpid(), dbCounter.Add(1))
	s, err := mongo.Open(ctx, ferretURI, db)
	if err != nil {
		t.Fatalf("mongo.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store { return open(t) })
}

func TestUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// Nothing listens on port 1.
	_, err := mongo.Open(ctx, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500", "x")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open on a dead address: %v, want ErrUnavailable", err)
	}
}
