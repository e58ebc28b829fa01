// Command herald runs Herald's services: one binary, one subcommand each.
//
//	herald dev [--engines-only]   the whole system on embedded engines
//	herald relay|controller|management|cacher   one service against real engines
//	herald token --sub alice --channels chat:lobby   sign a connection token
//	herald loadtest broadcast --conns 10000 --rate 1   load-test a relay
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/herald-chat/herald/internal/config"
)

const usage = `Herald: a realtime chat backend (Centrifugo client protocol v2).

Usage: herald <command> [flags]

Commands:
  dev          run the whole system on embedded engines (kfake, SQLite, versitygw)
  relay        run a WebSocket relay
  controller   run a controller (Kafka consumer, seq assignment, routing)
  management   run the REST history API
  cacher       run the archiver (MongoDB/SQLite -> S3)
  token        print a signed connection token
  loadtest     load-test a Centrifugo-protocol server (idle, broadcast, chat, churn, recovery)
  version      print the version

Run 'herald <command> -h' for the command's flags; every flag can also be
set with the HERALD_* environment variable named in its help.
`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage marks errors caused by bad arguments (exit code 2).
var errUsage = errors.New("usage")

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "dev":
		err = runDev(ctx, args, log)
	case "relay":
		err = runRelay(ctx, args, log)
	case "controller":
		err = runController(ctx, args, log)
	case "management":
		err = runManagement(ctx, args, log)
	case "cacher":
		err = runCacher(ctx, args, log)
	case "token":
		err = runToken(args, os.Stdout)
	case "loadtest":
		err = runLoadtest(ctx, args, log)
	case "version":
		fmt.Println(version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "herald: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "herald %s: %v\n", cmd, err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("HERALD_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// envOnly are the variables every command honours that have no flag.
const envOnly = `
Environment only:
  HERALD_LOG_LEVEL   log level: debug, info (default), warn, error
`

// parseFlags parses args, turns parse errors into usage errors and warns
// about deprecated flag names used. -h prints every flag with its variable
// (the table docs/configuration.md is generated from) and the variables
// without a flag.
func parseFlags(fs *flag.FlagSet, args []string, log *slog.Logger) error {
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { printUsage(fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	config.WarnDeprecated(fs, log)
	return nil
}

// printUsage writes the -h text of fs to its output.
func printUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage: herald %s [flags]\n\n", fs.Name())
	fmt.Fprintf(w, "Every flag is also set by the HERALD_* variable named in its help\n(flag > environment > default; the flag is the variable without HERALD_,\nlower case, dashes).\n\n")
	fs.PrintDefaults()
	fmt.Fprint(w, envOnly)
}
