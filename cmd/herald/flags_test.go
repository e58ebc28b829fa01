package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herald-chat/herald/assembly"
	"github.com/herald-chat/herald/devstack"
	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/internal/testutil"
)

// commandFlagSets are the flag sets of every command with HERALD_* flags.
func commandFlagSets() map[string]*flag.FlagSet {
	return map[string]*flag.FlagSet{
		"relay":      assembly.NewRelay().FlagSet(),
		"controller": assembly.NewController().FlagSet(),
		"management": assembly.NewManagement().FlagSet(),
		"cacher":     assembly.NewCacher().FlagSet(),
		"dev":        newDevCmd().fs,
	}
}

// flagEnv returns the variable a flag's usage names ("" without one).
func flagEnv(f *flag.Flag) string {
	if m := envInUsage.FindStringSubmatch(f.Usage); m != nil {
		return m[1]
	}
	return ""
}

// help returns what `herald <command> -h` prints for fs.
func help(t *testing.T, fs *flag.FlagSet) string {
	t.Helper()
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.Usage = func() { printUsage(fs) }
	if err := fs.Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	return out.String()
}

// Every flag is named after its variable (one name per variable in every
// command), and -h of every command lists every flag with its variable and
// the variables without a flag.
func TestHelpListsEveryFlagAndVariable(t *testing.T) {
	envOf := map[string]string{} // flag → variable, across commands
	for name, fs := range commandFlagSets() {
		t.Run(name, func(t *testing.T) {
			text := help(t, fs)
			fs.VisitAll(func(f *flag.Flag) {
				if !strings.Contains(text, "  -"+f.Name+" ") && !strings.Contains(text, "  -"+f.Name+"\n") {
					t.Errorf("-h does not list -%s", f.Name)
				}
				if config.DeprecatedAlias(f) != "" {
					return
				}
				env := flagEnv(f)
				if env == "" {
					return // -engines-only, -prometheus
				}
				if !strings.Contains(text, env) {
					t.Errorf("-h does not name %s", env)
				}
				if want := config.FlagName(env); f.Name != want {
					t.Errorf("-%s is bound to %s: want the name -%s", f.Name, env, want)
				}
				if prev, ok := envOf[f.Name]; ok && prev != env {
					t.Errorf("-%s means %s in one command and %s in another", f.Name, prev, env)
				}
				envOf[f.Name] = env
			})
			if !strings.Contains(text, "HERALD_LOG_LEVEL") {
				t.Errorf("-h does not name HERALD_LOG_LEVEL")
			}
		})
	}
	// herald dev honours every service variable except Kafka TLS/SASL.
	dev := help(t, newDevCmd().fs)
	for name, fs := range commandFlagSets() {
		fs.VisitAll(func(f *flag.Flag) {
			if env := flagEnv(f); env != "" && config.DeprecatedAlias(f) == "" &&
				!strings.HasPrefix(env, "HERALD_KAFKA_TLS") && !strings.HasPrefix(env, "HERALD_KAFKA_SASL") && !strings.Contains(dev, env) {
				t.Errorf("herald dev -h does not list %s (of %s)", env, name)
			}
		})
	}
}

// A deprecated name sets the new flag and logs one warning, however often
// it is given.
func TestDeprecatedFlagWorksAndWarnsOnce(t *testing.T) {
	for _, c := range []struct {
		cmd  assembly.Command
		args []string
		old  string
		got  func(assembly.Command) string
		want string
	}{
		{assembly.NewRelay(), []string{"-addr", "127.0.0.1:1", "-addr", "127.0.0.1:2"}, "-addr",
			func(c assembly.Command) string { return c.(*assembly.Relay).Config.Addr }, "127.0.0.1:2"},
		{assembly.NewController(), []string{"-batch-interval", "5ms"}, "-batch-interval",
			func(c assembly.Command) string { return c.(*assembly.Controller).Config.BatchInterval.String() }, "5ms"},
		{assembly.NewCacher(), []string{"-cacher-chunk-size", "16"}, "-cacher-chunk-size",
			func(c assembly.Command) string {
				return c.(*assembly.Cacher).FlagSet().Lookup("archive-chunk-size").Value.String()
			}, "16"},
		{assembly.NewManagement(), []string{"-admin-addr", "127.0.0.1:3"}, "-admin-addr",
			func(c assembly.Command) string { return c.(*assembly.Management).Admin.Addr }, "127.0.0.1:3"},
		{assembly.NewRelay(), []string{"-compression"}, "-compression",
			func(c assembly.Command) string { return c.FlagSet().Lookup("relay-compression").Value.String() }, "true"},
	} {
		t.Run(c.cmd.Name()+c.old, func(t *testing.T) {
			var logs testutil.LockedBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			if err := parseFlags(c.cmd.FlagSet(), c.args, log); err != nil {
				t.Fatal(err)
			}
			if got := c.got(c.cmd); got != c.want {
				t.Errorf("%v: got %q, want %q", c.args, got, c.want)
			}
			if n := strings.Count(logs.String(), "deprecated flag"); n != 1 || !strings.Contains(logs.String(), "flag="+c.old) {
				t.Errorf("want one warning about %s, logged:\n%s", c.old, logs.String())
			}
		})
	}
	// The new names warn about nothing.
	var logs testutil.LockedBuffer
	if err := parseFlags(assembly.NewRelay().FlagSet(), []string{"-relay-addr", "127.0.0.1:1"}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if logs.String() != "" {
		t.Errorf("new name logged:\n%s", logs.String())
	}
}

// herald dev listens where the services' variables say, engines included,
// and takes the services' flags.
func TestDevHonoursServiceVariables(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "HERALD_") {
			t.Setenv(k, "")
		}
	}
	addr := func() string {
		a, err := devstack.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	env := map[string]string{
		"HERALD_KAFKA_BROKERS": addr(), "HERALD_S3_ENDPOINT": "http://" + addr(),
		"HERALD_RELAY_ADDR": addr(), "HERALD_CONTROLLER_ADDR": addr(), "HERALD_MANAGEMENT_ADDR": addr(), "HERALD_CACHER_ADDR": addr(),
		"HERALD_RELAY_ADMIN_ADDR": addr(), "HERALD_CONTROLLER_ADMIN_ADDR": addr(), "HERALD_MANAGEMENT_ADMIN_ADDR": addr(), "HERALD_CACHER_ADMIN_ADDR": addr(),
		"HERALD_DATA_DIR": t.TempDir(), "HERALD_KAFKA_PARTITIONS": "3", "HERALD_TOKEN_SECRET": "dev-test-secret",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	c := newDevCmd()
	mgmt := addr() // a flag beats the variable
	if err := parseFlags(c.fs, []string{"-management-addr", mgmt, "-relay-publish-rate", "7"}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	c.opts.Log = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, c := range []struct{ got, want string }{
		{strings.Join(st.Brokers, ","), env["HERALD_KAFKA_BROKERS"]},
		{st.S3Endpoint, env["HERALD_S3_ENDPOINT"]},
		{st.RelayURL, "ws://" + env["HERALD_RELAY_ADDR"] + "/connection/websocket"},
		{st.ControllerAddr, env["HERALD_CONTROLLER_ADDR"]},
		{st.ManagementURL, "http://" + mgmt},
		{st.CacherURL, "http://" + env["HERALD_CACHER_ADDR"]},
		{st.Admin["relay"], "http://" + env["HERALD_RELAY_ADMIN_ADDR"]},
		{st.Admin["controller"], "http://" + env["HERALD_CONTROLLER_ADMIN_ADDR"]},
		{st.Admin["management"], "http://" + env["HERALD_MANAGEMENT_ADMIN_ADDR"]},
		{st.Admin["cacher"], "http://" + env["HERALD_CACHER_ADMIN_ADDR"]},
		{st.TokenSecret, "dev-test-secret"},
		{strings.TrimPrefix(st.StoreURI, env["HERALD_DATA_DIR"]), "/herald.db"},
		{string(rune('0' + st.Partitions)), "3"},
		{c.opts.Services.Relay.FlagSet().Lookup("relay-publish-rate").Value.String(), "7"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
