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

// Tests of the load tester against a real Herald: every service and embedded
// engine in this process on free ports, the load tester's workers as child
// processes of the test binary (TestMain). The recovery test lives in
// integration_test.go behind the integration build tag.

// startHerald starts a Herald stack that stops when t ends. The embedded S3
// gateway changes the process's working directory to its root (a temporary
// directory removed after the test); the cleanup changes it back so later
// tests that use relative paths (TestK6Scripts) still work.
func startHerald(t *testing.T) *devstack.Stack {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
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
		_ = os.Chdir(wd)
		t.Fatalf("starting Herald: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := st.Wait(); err != nil {
			t.Errorf("Herald stopped with: %v", err)
		}
		if err := os.Chdir(wd); err != nil {
			t.Errorf("restoring the working directory: %v", err)
		}
	})
	return st
}

// runAgainst runs the load tester with args against st.
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

// TestAgainstHerald proves the tool on a real Herald (one stack for both
// cases, short phases: about 10 s in all).
func TestAgainstHerald(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole Herald stack")
	}
	st := startHerald(t)

	// The test hook skips the 30th delivery of the run: the seq accounting
	// must report exactly that one as lost, and nothing else.
	t.Run("drop hook reports one lost", func(t *testing.T) {
		res := runAgainst(t, st, ScenarioBroadcast, "--conns", "20", "--rate", "20",
			"--warmup", "500ms", "--duration", "2s", "--drain", "1s", "--test-drop-delivery", "30")
		if d := res.Delivery; !d.Tracked || d.Lost != 1 || d.DroppedHook != 1 || d.Duplicated != 0 || d.OutOfOrder != 0 {
			t.Errorf("delivery %+v: want exactly 1 lost", d)
		}
	})

	// 2,000 connections split over two worker processes (children of this
	// test binary), all connected and subscribed, RSS sampled from /proc.
	t.Run("idle 2000 over two workers", func(t *testing.T) {
		res := runAgainst(t, st, ScenarioIdle, "--conns", "2000", "--workers", "2", "--connect-rate", "2000",
			"--warmup", "0s", "--duration", "1s", "--drain", "0s", "--server-pid", fmt.Sprint(os.Getpid()))
		if res.Processes != 2 || res.Connections.Connected != 2000 || res.Connections.ConnectFailed != 0 {
			t.Errorf("processes %d connections %+v errors %v", res.Processes, res.Connections, res.ErrorSample)
		}
		if res.Server == nil || res.Server.RSSMax == 0 {
			t.Errorf("server stats %+v: want RSS sampled", res.Server)
		}
	})
}
