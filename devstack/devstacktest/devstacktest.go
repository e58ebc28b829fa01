// Package devstacktest starts a throwaway dev stack for a test (the
// end-to-end, dashboards and load tests). Only tests import it.
package devstacktest

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/herald-chat/herald/devstack"
)

// Start starts a stack with devstack.Ephemeral options in a temporary
// directory (logs at warn, info with -v), changed by configure when non-nil,
// and stops it when the test ends; an error of the stop fails the test.
func Start(tb testing.TB, configure func(*devstack.Options)) *devstack.Stack {
	tb.Helper()
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	o := devstack.Ephemeral(tb.TempDir())
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if configure != nil {
		configure(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := devstack.Start(ctx, o)
	if err != nil {
		cancel()
		tb.Fatalf("starting the stack: %v", err)
	}
	tb.Cleanup(func() {
		cancel()
		if err := st.Wait(); err != nil {
			tb.Errorf("stack stopped with: %v", err)
		}
	})
	return st
}
