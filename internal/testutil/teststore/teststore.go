// Package teststore opens a fresh store of each implementation for the tests
// of packages that use one (cacher, controller, management). Only tests
// import it.
package teststore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/engines/ferret"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	"github.com/herald-chat/herald/internal/store/mongo"
	"github.com/herald-chat/herald/internal/store/sqlite"
)

// Memstore returns a new in-memory store.
func Memstore(testing.TB) store.Store { return memstore.New() }

// SQLite returns a SQLite store in a fresh file, closed when the test ends.
func SQLite(tb testing.TB) store.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "herald.db"))
	if err != nil {
		tb.Fatalf("sqlite.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// FerretDB (the MongoDB-wire engine of the mongo store's tests) starts on
// first use, shared by the tests of one binary; each Mongo call gets its own
// database. HERALD_TEST_MONGO_URI points the tests at a real MongoDB
// instead.
var (
	ferretOnce sync.Once
	ferretURI  string
	ferretErr  error
	ferretStop = func() {}
	ferretDBs  atomic.Int64
)

// Mongo returns the mongo store on a fresh database, closed when the test
// ends.
func Mongo(tb testing.TB) store.Store {
	tb.Helper()
	ferretOnce.Do(func() {
		if uri := os.Getenv("HERALD_TEST_MONGO_URI"); uri != "" {
			ferretURI = uri
			return
		}
		dir, err := os.MkdirTemp("", "herald-ferret-")
		if err != nil {
			ferretErr = err
			return
		}
		var stop func()
		ferretURI, stop, ferretErr = ferret.Start(context.Background(), dir)
		if ferretErr == nil {
			ferretStop = func() { stop(); os.RemoveAll(dir) }
		}
	})
	if ferretErr != nil {
		tb.Fatalf("starting FerretDB: %v", ferretErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := mongo.Open(ctx, ferretURI, fmt.Sprintf("herald_test_%d_%d", os.Getpid(), ferretDBs.Add(1)))
	if err != nil {
		tb.Fatalf("mongo.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Stop stops the shared FerretDB (call it from TestMain after m.Run).
func Stop() { ferretStop() }
