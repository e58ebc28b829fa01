// Package ferret embeds FerretDB v1 (SQLite handler) in process, as the
// MongoDB-wire engine for `herald dev` and for the mongo store's tests.
//
// FerretDB v1 is correct but slow (only _id equality is pushed down) and has
// no transactions, TTL or partial indexes: keep its data sets small.
package ferret

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Options tunes Start. The zero value is fine.
type Options struct {
	// Addr is the TCP listen address; default "127.0.0.1:0" (a random free
	// port).
	Addr string
	// Logger receives FerretDB's logs; default: errors only, to stderr.
	Logger *slog.Logger
}

// Start runs FerretDB storing its data under dir (created if needed) until
// ctx is canceled or stop is called. uri is a mongodb:// URI for it (path
// "/", so add a database name yourself or pass it separately). stop blocks
// until FerretDB has shut down and is safe to call more than once.
func Start(ctx context.Context, dir string) (uri string, stop func(), err error) {
	return StartWith(ctx, dir, Options{})
}

// StartWith is Start with options.
func StartWith(ctx context.Context, dir string, o Options) (uri string, stop func(), err error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("starting ferretdb: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", nil, fmt.Errorf("starting ferretdb: creating %s: %w", abs, err)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: o.Addr},
		Logger:    o.Logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		return "", nil, fmt.Errorf("starting ferretdb: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(runCtx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	return f.MongoDBURI(), stop, nil
}
