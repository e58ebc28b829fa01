package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
)

// devCmd is the command line of `herald dev`: its own flags and those of
// the four services it runs (devstack.Options.RegisterFlags).
type devCmd struct {
	fs         *flag.FlagSet
	opts       devstack.Options
	prometheus bool
}

func newDevCmd() *devCmd {
	c := &devCmd{fs: flag.NewFlagSet("dev", flag.ContinueOnError)}
	c.opts.RegisterFlags(c.fs)
	c.fs.BoolVar(&c.prometheus, "prometheus", false, "also run Prometheus (Debian package) scraping the services, UI on http://"+prometheusAddr)
	return c
}

// runDev runs the whole system (or just its engines) in this process.
func runDev(ctx context.Context, args []string, log *slog.Logger) error {
	c := newDevCmd()
	o := &c.opts
	if err := parseFlags(c.fs, args, log); err != nil {
		return err
	}
	if err := config.EnvErrors(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	o.Log = log
	// The dev mode tolerates a missing secret by using a published one; say so.
	devSecret := o.Services.Relay.Secret.Secret == ""

	if !o.EnginesOnly {
		// The relay's event loops share this process: keep a P for the
		// rest, as `herald relay` does (relay.Config.Procs).
		o.Services.Relay.SetProcs(log)
	}
	st, err := devstack.Start(ctx, *o)
	if err != nil {
		return err
	}
	if c.prometheus {
		stopProm, url, err := startPrometheus(ctx, st.Opts.DataDir, log)
		if err != nil {
			_ = st.Close()
			return err
		}
		defer stopProm()
		fmt.Printf("  Prometheus           %s (dashboards: see dashboards/README.md)\n", url)
	}
	printBanner(os.Stdout, st, devSecret)
	<-ctx.Done()
	log.Info("shutting down")
	done := make(chan error, 1)
	go func() { done <- st.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("shutdown took longer than 30s")
	}
}

func printBanner(w io.Writer, st *devstack.Stack, devSecret bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nHerald dev is running (data in %s). Ctrl-C stops it; a second run keeps all history.\n\n", st.Opts.DataDir)
	fmt.Fprintf(&b, "  Kafka (kfake)        %s  topic %s, %d partitions\n", strings.Join(st.Brokers, ","), st.Topic, st.Partitions)
	fmt.Fprintf(&b, "  store                %s\n", st.StoreURI)
	fmt.Fprintf(&b, "  S3 (versitygw)       %s  bucket %s  (access key %s, secret %s)\n", st.S3Endpoint, st.Bucket, st.S3AccessKey, st.S3SecretKey)
	if st.Opts.EnginesOnly {
		fmt.Fprintf(&b, "\nEngines only. Run services against them with:\n")
		fmt.Fprintf(&b, "  export HERALD_KAFKA_BROKERS=%s HERALD_STORE_URI=%s HERALD_S3_ENDPOINT=%s \\\n", strings.Join(st.Brokers, ","), st.StoreURI, st.S3Endpoint)
		fmt.Fprintf(&b, "         HERALD_S3_ACCESS_KEY=%s HERALD_S3_SECRET_KEY=%s HERALD_TOKEN_SECRET=%s\n", st.S3AccessKey, st.S3SecretKey, st.TokenSecret)
	} else {
		fmt.Fprintf(&b, "  chat page            %s/  (pick a name; built on centrifuge-js)\n", st.ManagementURL)
		fmt.Fprintf(&b, "  relay WebSocket      %s\n", st.RelayURL)
		fmt.Fprintf(&b, "  controller gRPC      %s\n", st.ControllerAddr)
		fmt.Fprintf(&b, "  management REST      %s/v1/channels/{channel}/messages  (OpenAPI: %s/v1/openapi.json)\n", st.ManagementURL, st.ManagementURL)
		fmt.Fprintf(&b, "  cacher API           %s/v1/archive/run\n", st.CacherURL)
		if mc := st.Opts.Services.Management.Config; mc.API && mc.APIOpen {
			fmt.Fprintf(&b, "  server API           %s/api/{method}  (open on loopback; set HERALD_API_KEY to require a key)\n", st.ManagementURL)
		} else if mc.API {
			fmt.Fprintf(&b, "  server API           %s/api/{method}  (Authorization: apikey $HERALD_API_KEY)\n", st.ManagementURL)
		}
		for _, n := range []string{"relay", "controller", "management", "cacher"} {
			fmt.Fprintf(&b, "  %-20s %s/metrics\n", n+" admin", st.Admin[n])
		}
	}
	if devSecret {
		fmt.Fprintf(&b, "\n  token secret (dev only, HS256): %s\n", st.TokenSecret)
	}
	claims := auth.NewClaims("alice", []string{"chat:lobby", "chat:dev"}, 24*time.Hour)
	if tok, err := auth.Sign(st.TokenSecret, claims); err == nil {
		fmt.Fprintf(&b, "  token for user alice (channels chat:lobby, chat:dev; 24h):\n    %s\n", tok)
		fmt.Fprintf(&b, "  more: herald token --dev --sub bob --channels chat:lobby\n\n")
	}
	_, _ = io.WriteString(w, b.String())
}
