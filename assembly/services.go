package assembly

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"runtime"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/herald-chat/herald/cacher"
	"github.com/herald-chat/herald/controller"
	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/internal/kafka"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/management"
	"github.com/herald-chat/herald/relay"
)

// Controller is `herald controller`.
type Controller struct {
	fs     *flag.FlagSet
	Config controller.Config
	Kafka  kafka.Config
	Store  Store
	Admin  Admin
	kopts  []kgo.Opt
}

// NewController returns the controller command with its flags registered.
func NewController() *Controller {
	c := &Controller{fs: flag.NewFlagSet("controller", flag.ContinueOnError)}
	c.Config.RegisterFlags(c.fs)
	c.Kafka.RegisterFlags(c.fs)
	c.Store.RegisterFlags(c.fs)
	c.Admin.RegisterFlags(c.fs, "controller", "127.0.0.1:9101", true)
	return c
}

func (c *Controller) Name() string           { return "controller" }
func (c *Controller) FlagSet() *flag.FlagSet { return c.fs }

func (c *Controller) Validate() error {
	if err := errors.Join(config.EnvErrors(), c.Config.Validate(), c.Kafka.Validate()); err != nil {
		return err
	}
	var err error
	c.kopts, err = c.Kafka.Opts()
	return err
}

func (c *Controller) Build(ctx context.Context, log *slog.Logger, deps Deps) (*Service, error) {
	svc := newService(c.Name(), c.Admin, log)
	st, err := c.Store.open(ctx, deps, svc)
	if err != nil {
		return nil, err
	}
	srv, err := controller.New(c.Config, st, log, svc.Admin.Registry, c.kopts...)
	if err != nil {
		return nil, errors.Join(err, svc.Close())
	}
	return svc.setServer(srv), nil
}

// Relay is `herald relay`.
type Relay struct {
	fs       *flag.FlagSet
	Config   relay.Config
	Kafka    kafka.Config
	Secret   Secret
	Admin    Admin
	kopts    []kgo.Opt
	verifier *auth.Verifier
}

// NewRelay returns the relay command with its flags registered.
func NewRelay() *Relay {
	c := &Relay{fs: flag.NewFlagSet("relay", flag.ContinueOnError)}
	c.Config.RegisterFlags(c.fs)
	c.Kafka.RegisterFlags(c.fs)
	c.Secret.RegisterFlags(c.fs, "HS256 secret of client tokens (required)")
	c.Admin.RegisterFlags(c.fs, "relay", "127.0.0.1:9100", false)
	return c
}

func (c *Relay) Name() string           { return "relay" }
func (c *Relay) FlagSet() *flag.FlagSet { return c.fs }

func (c *Relay) Validate() error {
	if err := errors.Join(config.EnvErrors(), c.Config.Validate(), c.Kafka.Validate()); err != nil {
		return err
	}
	var err error
	if c.kopts, err = c.Kafka.Opts(); err != nil {
		return err
	}
	c.verifier, err = c.Secret.verifier()
	return err
}

func (c *Relay) Build(ctx context.Context, log *slog.Logger, deps Deps) (*Service, error) {
	svc := newService(c.Name(), c.Admin, log)
	srv, err := relay.New(c.Config, c.verifier, log, svc.Admin.Registry, c.kopts...)
	if err != nil {
		return nil, err
	}
	return svc.setServer(srv), nil
}

// SetProcs gives a process that runs a relay one P more than its event
// loops (relay.Config.Procs) unless GOMAXPROCS is set, and warns when a
// user-set value leaves the loops every P. Call it after Validate.
func (c *Relay) SetProcs(log *slog.Logger) {
	cfg := c.Config
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < cfg.Procs() {
		runtime.GOMAXPROCS(cfg.Procs())
	}
	log.Info("relay runtime", "event_loops", cfg.Loops(), "gomaxprocs", runtime.GOMAXPROCS(0))
	if runtime.GOMAXPROCS(0) <= cfg.Loops() {
		log.Warn("GOMAXPROCS is not above the event loop count: Kafka acks and controller batches may wait up to 10 ms; set HERALD_RELAY_EVENT_LOOPS below GOMAXPROCS",
			"event_loops", cfg.Loops(), "gomaxprocs", runtime.GOMAXPROCS(0))
	}
}

// Management is `herald management`.
type Management struct {
	fs       *flag.FlagSet
	Config   management.Config
	Kafka    kafka.Config
	kopts    []kgo.Opt
	Store    Store
	S3       archive.Config
	Secret   Secret
	Admin    Admin
	verifier *auth.Verifier
}

// NewManagement returns the management command with its flags registered.
func NewManagement() *Management {
	c := &Management{fs: flag.NewFlagSet("management", flag.ContinueOnError)}
	c.Config.RegisterFlags(c.fs)
	c.Kafka.RegisterFlags(c.fs)
	c.Store.RegisterFlags(c.fs)
	c.S3.RegisterFlags(c.fs)
	c.Secret.RegisterFlags(c.fs, "HS256 secret of client tokens (required)")
	c.Admin.RegisterFlags(c.fs, "management", "127.0.0.1:9102", true)
	return c
}

func (c *Management) Name() string           { return "management" }
func (c *Management) FlagSet() *flag.FlagSet { return c.fs }

func (c *Management) Validate() error {
	var err error
	if c.verifier, err = c.Secret.verifier(); err != nil {
		return err
	}
	if err := errors.Join(config.EnvErrors(), c.Config.Validate(), c.Kafka.Validate()); err != nil {
		return err
	}
	if c.kopts, err = c.Kafka.Opts(); err != nil {
		return err
	}
	return c.S3.Validate()
}

func (c *Management) Build(ctx context.Context, log *slog.Logger, deps Deps) (*Service, error) {
	svc := newService(c.Name(), c.Admin, log)
	st, arc, err := openArchived(ctx, c.Store, c.S3, deps, svc)
	if err != nil {
		return nil, err
	}
	srv, err := management.New(c.Config, st, arc, c.verifier, log, svc.Admin.Registry, c.kopts...)
	if err != nil {
		return nil, errors.Join(err, svc.Close())
	}
	return svc.setServer(srv), nil
}

// Cacher is `herald cacher`.
type Cacher struct {
	fs     *flag.FlagSet
	Config cacher.Config
	Store  Store
	S3     archive.Config
	Secret Secret
	Admin  Admin
}

// NewCacher returns the cacher command with its flags registered. The chunk
// size has one flag, the archive's -archive-chunk-size (the cacher's old
// -cacher-chunk-size is its deprecated alias).
func NewCacher() *Cacher {
	c := &Cacher{fs: flag.NewFlagSet("cacher", flag.ContinueOnError)}
	c.Config.RegisterFlags(c.fs)
	c.Store.RegisterFlags(c.fs)
	c.S3.RegisterFlags(c.fs)
	config.Deprecated(c.fs, "cacher-chunk-size", "archive-chunk-size")
	c.Admin.RegisterFlags(c.fs, "cacher", "127.0.0.1:9103", true)
	c.Secret.RegisterFlags(c.fs, "HS256 secret that signs admin tokens (required unless -cacher-require-admin=false)")
	return c
}

func (c *Cacher) Name() string           { return "cacher" }
func (c *Cacher) FlagSet() *flag.FlagSet { return c.fs }

func (c *Cacher) Validate() error {
	c.Config.Verifier = nil
	if c.Secret.Secret != "" {
		c.Config.Verifier = auth.NewVerifier(c.Secret.Secret)
	}
	c.Config.ChunkSize = c.S3.ChunkSize
	if err := errors.Join(config.EnvErrors(), c.Config.Validate()); err != nil {
		return err
	}
	return c.S3.Validate()
}

func (c *Cacher) Build(ctx context.Context, log *slog.Logger, deps Deps) (*Service, error) {
	svc := newService(c.Name(), c.Admin, log)
	st, arc, err := openArchived(ctx, c.Store, c.S3, deps, svc)
	if err != nil {
		return nil, err
	}
	srv, err := cacher.New(c.Config, st, arc, log, svc.Admin.Registry)
	if err != nil {
		return nil, errors.Join(err, svc.Close())
	}
	return svc.setServer(srv), nil
}

// openArchived opens the S3 archive and the store of management and cacher.
func openArchived(ctx context.Context, sf Store, s3 archive.Config, deps Deps, svc *Service) (store.Store, *archive.Client, error) {
	arc, err := openArchive(ctx, s3)
	if err != nil {
		return nil, nil, err
	}
	st, err := sf.open(ctx, deps, svc)
	return st, arc, err
}

var (
	_ Command = (*Controller)(nil)
	_ Command = (*Relay)(nil)
	_ Command = (*Management)(nil)
	_ Command = (*Cacher)(nil)
)
