// Package tick runs the services' periodic housekeeping (janitors, watchers,
// timer wheels): one goroutine, one ticker, stopped with the context.
package tick

import (
	"context"
	"time"
)

// Every calls fn with the tick's time every interval until ctx ends; it
// returns when ctx is done and never calls fn after that. A tick that fn overruns is dropped, not queued
// (time.Ticker semantics), so a slow sweep never piles up behind itself.
// interval must be positive.
func Every(ctx context.Context, interval time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if ctx.Err() != nil { // both were ready: select picks at random
				return
			}
			fn(now)
		}
	}
}
