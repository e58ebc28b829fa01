package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"

	"github.com/herald-chat/herald/cacher"
	"github.com/herald-chat/herald/controller"
	"github.com/herald-chat/herald/internal/admin"
	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
	kafka "github.com/herald-chat/herald/internal/kafka"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/storeopen"
	"github.com/herald-chat/herald/management"
	"github.com/herald-chat/herald/relay"
)

// Engine settings shared by the service subcommands.
type storeFlags struct{ uri string }

func (f *storeFlags) register(fs *flag.FlagSet) {
	config.String(fs, &f.uri, "store-uri", "HERALD_STORE_URI", "./data/herald.db",
		"store: a SQLite file path (sqlite://PATH) or a MongoDB URI (mongodb://…)")
}

func (f *storeFlags) open(ctx context.Context) (store.Store, error) {
	st, err := storeopen.Open(ctx, f.uri)
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	return st, nil
}

// s3Flags are the archive's S3 settings (flags and HERALD_S3_* env).
type s3Flags struct{ archive.Config }

func (f *s3Flags) register(fs *flag.FlagSet) { f.Config.RegisterFlags(fs) }

func (f *s3Flags) open(ctx context.Context) (*archive.Client, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	arc, err := archive.New(ctx, f.Config)
	if err != nil {
		return nil, fmt.Errorf("opening the S3 archive: %w", err)
	}
	return arc, nil
}

type secretFlag struct{ secret string }

func (f *secretFlag) register(fs *flag.FlagSet) {
	f.registerAs(fs, "HS256 secret of client tokens (required)")
}

// registerAs adds -token-secret with usage (the cacher needs it only for
// its admin requirement).
func (f *secretFlag) registerAs(fs *flag.FlagSet, usage string) {
	config.String(fs, &f.secret, "token-secret", "HERALD_TOKEN_SECRET", "", usage)
}

func (f *secretFlag) verifier() (*auth.Verifier, error) {
	if f.secret == "" {
		return nil, fmt.Errorf("%w: no token secret: set HERALD_TOKEN_SECRET (only 'herald dev' has a built-in dev secret)", errUsage)
	}
	return auth.NewVerifier(f.secret), nil
}

type adminFlag struct{ addr, pprof string }

func (f *adminFlag) register(fs *flag.FlagSet, service, def string) {
	config.String(fs, &f.addr, "admin-addr", "HERALD_"+upper(service)+"_ADMIN_ADDR", def, "admin listener (/metrics, /healthz, /readyz)")
}

// registerPprof adds -pprof-addr (the relay has its own, in relay.Config).
func (f *adminFlag) registerPprof(fs *flag.FlagSet, service string) {
	config.String(fs, &f.pprof, "pprof-addr", "HERALD_"+upper(service)+"_PPROF_ADDR", "", "serve net/http/pprof on this address (empty: off; never public)")
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// service is what every service package's Server provides.
type service interface {
	Run(ctx context.Context) error
	Ready(ctx context.Context) error
}

// serve runs svc with its admin server until ctx is cancelled.
func serve(ctx context.Context, name string, svc service, adm *admin.Server, af adminFlag, log *slog.Logger) error {
	adm.AddCheck(name, svc.Ready)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // also stops pprof when the admin listener fails
	if af.pprof != "" {
		if _, err := admin.ServePprof(ctx, af.pprof, log); err != nil {
			return err
		}
	}
	if err := adm.Listen(af.addr); err != nil {
		return fmt.Errorf("admin listener %s: %w", af.addr, err)
	}
	var wg sync.WaitGroup
	var adminErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		adminErr = adm.Serve(ctx)
	}()
	log.Info("started", "service", name, "admin", "http://"+adm.Addr())
	err := svc.Run(ctx)
	cancel()
	wg.Wait()
	log.Info("stopped", "service", name)
	return errors.Join(err, adminErr)
}

// Each service's command line: its flag set and where the flags land.
// Building them in one place lets docs/configuration.md be generated from
// (and checked against) the real flags.

type controllerCmd struct {
	fs    *flag.FlagSet
	cfg   controller.Config
	kafka kafka.Config
	sf    storeFlags
	af    adminFlag
}

func newControllerCmd() *controllerCmd {
	c := &controllerCmd{fs: flag.NewFlagSet("controller", flag.ContinueOnError)}
	c.cfg.RegisterFlags(c.fs)
	c.kafka.RegisterFlags(c.fs)
	c.sf.register(c.fs)
	c.af.register(c.fs, "controller", "127.0.0.1:9101")
	c.af.registerPprof(c.fs, "controller")
	return c
}

type relayCmd struct {
	fs    *flag.FlagSet
	cfg   relay.Config
	kafka kafka.Config
	tf    secretFlag
	af    adminFlag
}

func newRelayCmd() *relayCmd {
	c := &relayCmd{fs: flag.NewFlagSet("relay", flag.ContinueOnError)}
	c.cfg.RegisterFlags(c.fs)
	c.kafka.RegisterFlags(c.fs)
	c.tf.register(c.fs)
	c.af.register(c.fs, "relay", "127.0.0.1:9100")
	return c
}

type managementCmd struct {
	fs  *flag.FlagSet
	cfg management.Config
	sf  storeFlags
	s3  s3Flags
	tf  secretFlag
	af  adminFlag
}

func newManagementCmd() *managementCmd {
	c := &managementCmd{fs: flag.NewFlagSet("management", flag.ContinueOnError)}
	c.cfg.RegisterFlags(c.fs)
	c.sf.register(c.fs)
	c.s3.register(c.fs)
	c.tf.register(c.fs)
	c.af.register(c.fs, "management", "127.0.0.1:9102")
	c.af.registerPprof(c.fs, "management")
	return c
}

type cacherCmd struct {
	fs  *flag.FlagSet
	cfg cacher.Config
	sf  storeFlags
	s3  s3Flags
	af  adminFlag
	tf  secretFlag
}

func newCacherCmd() *cacherCmd {
	c := &cacherCmd{fs: flag.NewFlagSet("cacher", flag.ContinueOnError)}
	c.cfg.RegisterFlags(c.fs)
	c.sf.register(c.fs)
	c.s3.register(c.fs)
	c.af.register(c.fs, "cacher", "127.0.0.1:9103")
	c.af.registerPprof(c.fs, "cacher")
	c.tf.registerAs(c.fs, "HS256 secret that signs admin tokens (needed with -cacher-require-admin)")
	return c
}

func runController(ctx context.Context, args []string, log *slog.Logger) error {
	c := newControllerCmd()
	if err := parseFlags(c.fs, args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(), c.cfg.Validate(), c.kafka.Validate()); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	kopts, err := c.kafka.Opts()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	st, err := c.sf.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	adm := admin.New(log)
	srv, err := controller.New(c.cfg, st, log, adm.Registry, kopts...)
	if err != nil {
		return err
	}
	return serve(ctx, "controller", srv, adm, c.af, log)
}

func runRelay(ctx context.Context, args []string, log *slog.Logger) error {
	c := newRelayCmd()
	if err := parseFlags(c.fs, args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(), c.cfg.Validate(), c.kafka.Validate()); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	kopts, err := c.kafka.Opts()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	v, err := c.tf.verifier()
	if err != nil {
		return err
	}
	setRelayProcs(c.cfg, log)
	adm := admin.New(log)
	srv, err := relay.New(c.cfg, v, log, adm.Registry, kopts...)
	if err != nil {
		return err
	}
	return serve(ctx, "relay", srv, adm, c.af, log)
}

func runManagement(ctx context.Context, args []string, log *slog.Logger) error {
	c := newManagementCmd()
	if err := parseFlags(c.fs, args); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(), c.cfg.Validate()); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	v, err := c.tf.verifier()
	if err != nil {
		return err
	}
	arc, err := c.s3.open(ctx)
	if err != nil {
		return err
	}
	st, err := c.sf.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	adm := admin.New(log)
	srv, err := management.New(c.cfg, st, arc, v, log, adm.Registry)
	if err != nil {
		return err
	}
	return serve(ctx, "management", srv, adm, c.af, log)
}

func runCacher(ctx context.Context, args []string, log *slog.Logger) error {
	c := newCacherCmd()
	if err := parseFlags(c.fs, args); err != nil {
		return err
	}
	if c.tf.secret != "" {
		c.cfg.Verifier = auth.NewVerifier(c.tf.secret)
	}
	if err := errors.Join(config.EnvErrors(), c.cfg.Validate()); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// One chunk size: -cacher-chunk-size when given, else the archive's
	// (-archive-chunk-size; both default to HERALD_ARCHIVE_CHUNK_SIZE).
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == "cacher-chunk-size" {
			c.s3.ChunkSize = c.cfg.ChunkSize
		}
	})
	c.cfg.ChunkSize = c.s3.ChunkSize
	arc, err := c.s3.open(ctx)
	if err != nil {
		return err
	}
	st, err := c.sf.open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	adm := admin.New(log)
	srv, err := cacher.New(c.cfg, st, arc, log, adm.Registry)
	if err != nil {
		return err
	}
	return serve(ctx, "cacher", srv, adm, c.af, log)
}

// setRelayProcs gives a process that runs a relay one P more than its event
// loops (relay.Config.Procs) unless GOMAXPROCS is set, and warns when a
// user-set value leaves the loops every P.
func setRelayProcs(cfg relay.Config, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < cfg.Procs() {
		runtime.GOMAXPROCS(cfg.Procs())
	}
	log.Info("relay runtime", "event_loops", cfg.Loops(), "gomaxprocs", runtime.GOMAXPROCS(0))
	if runtime.GOMAXPROCS(0) <= cfg.Loops() {
		log.Warn("GOMAXPROCS is not above the event loop count: Kafka acks and controller batches may wait up to 10 ms; set HERALD_RELAY_EVENT_LOOPS below GOMAXPROCS",
			"event_loops", cfg.Loops(), "gomaxprocs", runtime.GOMAXPROCS(0))
	}
}
