package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/herald-chat/herald/assembly"
)

// The service subcommands: parse the command's flags, validate, build the
// service through the assembly (the same construction `herald dev` uses)
// and serve it with its admin server until ctx is cancelled.

func runController(ctx context.Context, args []string, log *slog.Logger) error {
	return runService(ctx, assembly.NewController(), args, log)
}

func runRelay(ctx context.Context, args []string, log *slog.Logger) error {
	return runService(ctx, assembly.NewRelay(), args, log)
}

func runManagement(ctx context.Context, args []string, log *slog.Logger) error {
	return runService(ctx, assembly.NewManagement(), args, log)
}

func runCacher(ctx context.Context, args []string, log *slog.Logger) error {
	return runService(ctx, assembly.NewCacher(), args, log)
}

func runService(ctx context.Context, cmd assembly.Command, args []string, log *slog.Logger) error {
	if err := parseFlags(cmd.FlagSet(), args, log); err != nil {
		return err
	}
	if err := cmd.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if r, ok := cmd.(*assembly.Relay); ok {
		r.SetProcs(log)
	}
	svc, err := cmd.Build(ctx, log, assembly.Deps{})
	if err != nil {
		return err
	}
	return errors.Join(svc.Serve(ctx, log), svc.Close())
}
