//go:build integration

package loadtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/herald-chat/herald/internal/devstack"
)

// Integration tests against a real Herald (every service and embedded engine
// in this process): go test -tags integration -run Integration ./loadtest/

func startHerald(t *testing.T) *devstack.Stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	st, err := devstack.Start(ctx, devstack.Options{
		DataDir:   t.TempDir(),
		KafkaAddr: "auto", S3Addr: "auto",
		RelayAddr: "auto", ControllerAddr: "auto", ManagementAddr: "auto", CacherAddr: "auto",
		RelayAdmin: "auto", ControllerAdmin: "auto", ManagementAdmin: "auto", CacherAdmin: "auto",
		TokenSecret: "x",
		Log:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		cancel()
		t.Fatalf("starting Herald: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := st.Wait(); err != nil {
			t.Errorf("Herald stopped with: %v", err)
		}
	})
	return st
}

func runAgainst(t *testing.T, st *devstack.Stack, args ...string) *Result {
	t.Helper()
	args = append(args, "--url", st.RelayURL, "--secret", st.TokenSecret, "--progress=false")
	cfg, err := ParseArgs(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), cfg, Options{Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	res.WriteSummary(&sb)
	t.Log("\n" + sb.String())
	return res
}

func TestIntegrationRecoveryLosesNothing(t *testing.T) {
	st := startHerald(t)
	recovery := func(t *testing.T, prefix string) {
		res := runAgainst(t, st, ScenarioRecovery, "--conns", "40", "--channels", "4", "--rate", "40",
			"--warmup", "1s", "--duration", "5s", "--drain", "2s", "--drop-fraction", "0.5", "--reconnect-delay", "500ms",
			"--connect-rate", "200", "--channel-prefix", prefix)
		d := res.Delivery
		if !d.Tracked || d.Expected == 0 || d.Lost != 0 || d.Duplicated != 0 || d.OutOfOrder != 0 {
			t.Errorf("delivery %+v: want 0 lost, 0 duplicated, 0 out of order", d)
		}
		if rc := res.Recovery; rc == nil || rc.Dropped != 20 || rc.Resubscribed != 20 || rc.Recovered != 20 || rc.NotRecovered != 0 {
			t.Errorf("recovery %+v", rc)
		}
		if res.Connections.ConnectFailed != 0 || res.Throughput.PublishErrors != 0 {
			t.Errorf("connections %+v publish errors %d: %v", res.Connections, res.Throughput.PublishErrors, res.ErrorSample)
		}
	}
	// Channels nobody published to yet: the subscribe reply's epoch must
	// already be the one recovery later compares against.
	t.Run("fresh channels", func(t *testing.T) { recovery(t, "lt-fresh:") })
	// Channels with history (a chat run published to them first).
	t.Run("channels with history", func(t *testing.T) {
		runAgainst(t, st, ScenarioChat, "--conns", "4", "--channels", "4", "--rate", "20",
			"--warmup", "0s", "--duration", "1s", "--drain", "500ms", "--channel-prefix", "lt-warm:")
		recovery(t, "lt-warm:")
	})
}

func TestIntegrationDropHookReportsOneLost(t *testing.T) {
	st := startHerald(t)
	res := runAgainst(t, st, ScenarioBroadcast, "--conns", "20", "--rate", "20",
		"--warmup", "1s", "--duration", "3s", "--drain", "2s", "--test-drop-delivery", "30")
	if d := res.Delivery; d.Lost != 1 || d.DroppedHook != 1 || d.Duplicated != 0 {
		t.Errorf("delivery %+v: want exactly 1 lost", d)
	}
}

func TestIntegrationIdle2000OverTwoWorkers(t *testing.T) {
	st := startHerald(t)
	res := runAgainst(t, st, ScenarioIdle, "--conns", "2000", "--workers", "2", "--connect-rate", "1000",
		"--warmup", "0s", "--duration", "2s", "--drain", "0s", "--server-pid", fmt.Sprint(os.Getpid()))
	if res.Processes != 2 || res.Connections.Connected != 2000 || res.Connections.ConnectFailed != 0 {
		t.Errorf("processes %d connections %+v errors %v", res.Processes, res.Connections, res.ErrorSample)
	}
}
