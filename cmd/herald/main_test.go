package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/herald-chat/herald/internal/auth"
)

func TestTokenCommand(t *testing.T) {
	t.Setenv("HERALD_TOKEN_SECRET", "s3cret")
	var out bytes.Buffer
	err := runToken([]string{"--sub", "alice", "--channels", "chat:lobby, chat:dev", "--info", `{"name":"Alice"}`,
		"--caps", `[{"channels":["news:*"],"match":"wildcard","allow":["sub"]}]`}, &out)
	if err != nil {
		t.Fatal(err)
	}
	c, err := auth.NewVerifier("s3cret").Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("printed token does not verify: %v", err)
	}
	if c.Subject != "alice" || !c.HasChannel("chat:lobby") || !c.HasChannel("chat:dev") || string(c.Info) != `{"name":"Alice"}` {
		t.Fatalf("claims %+v", c)
	}
	if !c.Allows("news:1", auth.AllowSubscribe) || c.Allows("news:1", auth.AllowPublish) {
		t.Fatalf("caps not carried: %+v", c.Caps)
	}
	if c.ExpiresAt().IsZero() {
		t.Fatal("default ttl should set exp")
	}
	if _, err := auth.NewVerifier("other").Verify(strings.TrimSpace(out.String())); err == nil {
		t.Fatal("token verified with another secret")
	}

	out.Reset()
	if err := runToken([]string{"--sub", "bob", "--channel", "news:1"}, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.NewVerifier("s3cret").VerifySubscription(strings.TrimSpace(out.String()), "bob", "news:1"); err != nil {
		t.Fatalf("subscription token: %v", err)
	}
}

func TestTokenCommandUsageErrors(t *testing.T) {
	t.Setenv("HERALD_TOKEN_SECRET", "")
	for _, args := range [][]string{
		{},             // no --sub
		{"--sub", "a"}, // no secret and no --dev
		{"--sub", "a", "--dev", "--info", "{nope"}, // bad JSON
		{"--sub", "a", "--dev", "--caps", "[1]"},   // bad caps
		{"--sub", "a", "--dev", "extra"},           // stray argument
	} {
		if err := runToken(args, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("token %q: got %v, want a usage error", args, err)
		}
	}
	var out bytes.Buffer
	if err := runToken([]string{"--sub", "a", "--dev"}, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.NewVerifier(auth.DevSecret).Verify(strings.TrimSpace(out.String())); err != nil {
		t.Fatalf("--dev token: %v", err)
	}
}

// Services other than dev refuse to start without what they need, with a
// message naming the environment variable.
func TestServicesRefuseMissingSettings(t *testing.T) {
	for _, k := range []string{"HERALD_TOKEN_SECRET", "HERALD_S3_ACCESS_KEY", "HERALD_S3_SECRET_KEY"} {
		t.Setenv(k, "")
	}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	cases := []struct {
		name string
		run  func() error
		want string
	}{
		{"relay without secret", func() error { return runRelay(ctx, nil, log) }, "HERALD_TOKEN_SECRET"},
		{"management without secret", func() error { return runManagement(ctx, nil, log) }, "HERALD_TOKEN_SECRET"},
		{"cacher without secret", func() error { return runCacher(ctx, []string{"-store-uri", t.TempDir() + "/x.db"}, log) }, "HERALD_TOKEN_SECRET"},
		{"cacher without secret names the opt-out", func() error { return runCacher(ctx, nil, log) }, "-cacher-require-admin=false"},
		{"cacher without S3 credentials", func() error {
			return runCacher(ctx, []string{"-cacher-require-admin=false", "-store-uri", t.TempDir() + "/x.db"}, log)
		}, "HERALD_S3_ACCESS_KEY"},
		{"relay with a bad flag", func() error { return runRelay(ctx, []string{"-no-such-flag"}, log) }, "no-such-flag"},
		{"controller with bad partitions", func() error { return runController(ctx, []string{"-kafka-partitions", "0"}, log) }, "partitions"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a usage error mentioning %s", err, c.want)
			}
		})
	}
}
