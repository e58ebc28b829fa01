package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/herald-chat/herald/loadtest"
)

// runLoadtest is `herald loadtest <scenario> [flags]` (and the hidden
// `herald loadtest --worker` of its worker processes). Argument errors also
// match errUsage, so main exits 2 on them.
func runLoadtest(ctx context.Context, args []string, log *slog.Logger) error {
	err := loadtest.Main(ctx, args, log)
	if errors.Is(err, loadtest.ErrUsage) {
		return loadtestUsageError{err}
	}
	return err
}

// loadtestUsageError prints as the load tester's message and matches both
// loadtest.ErrUsage and errUsage.
type loadtestUsageError struct{ err error }

func (e loadtestUsageError) Error() string   { return e.err.Error() }
func (e loadtestUsageError) Unwrap() []error { return []error{e.err, errUsage} }
