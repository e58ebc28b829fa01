// Package assembly builds Herald's services from their configuration. Each
// service has one command: its flag set, the settings the flags land in
// (the service's Config plus the Kafka, store, S3, token secret and admin
// settings it needs), Validate, and Build, which opens what the service
// needs and calls its New. The production subcommands of cmd/herald and the
// dev stack (`herald dev`, the end-to-end, dashboards and load tests) build
// services only through these commands, so the tests prove the wiring that
// operators run.
//
// Flags follow one scheme: the flag is its environment variable without
// HERALD_, in lower case, with dashes (config.FlagName); older names are
// deprecated aliases (config.Deprecated) that log a warning when used.
package assembly

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync"

	"github.com/herald-chat/herald/internal/admin"
	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/storeopen"
)

// Command is one service's command line and construction.
type Command interface {
	// Name is the service's name (relay, controller, management, cacher).
	Name() string
	// FlagSet holds the command's flags; their defaults come from the
	// HERALD_* environment, so an unparsed set already holds env > default.
	FlagSet() *flag.FlagSet
	// Validate checks the settings after parsing, naming flags and
	// variables; an error is a usage error.
	Validate() error
	// Build opens what the service needs (store, archive) unless deps
	// provides it and constructs the service. Validate must have passed.
	Build(ctx context.Context, log *slog.Logger, deps Deps) (*Service, error)
}

// Deps are engines the caller already opened; Build opens what is nil.
type Deps struct {
	// Store replaces opening -store-uri (the dev stack shares one store
	// among its services). Build does not close it.
	Store store.Store
}

// Server is what every service package's Server provides.
type Server interface {
	Run(ctx context.Context) error
	Ready(ctx context.Context) error
}

// Service is a built service with its admin server.
type Service struct {
	Name   string
	Server Server
	// Admin serves /metrics (the service's registry), /healthz, /readyz.
	Admin     *admin.Server
	AdminAddr string
	// PprofAddr serves net/http/pprof when set.
	PprofAddr string

	listening bool
	closers   []func() error
}

func newService(name string, a Admin, log *slog.Logger) *Service {
	return &Service{Name: name, Admin: admin.New(log), AdminAddr: a.Addr, PprofAddr: a.Pprof}
}

// Listen binds the admin listener (Serve does it when not done before).
func (s *Service) Listen() error {
	if err := s.Admin.Listen(s.AdminAddr); err != nil {
		return fmt.Errorf("%s admin listener %s: %w", s.Name, s.AdminAddr, err)
	}
	s.listening = true
	return nil
}

// Serve runs the service with its admin server (and pprof) until ctx is
// cancelled, then returns once both stopped.
func (s *Service) Serve(ctx context.Context, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // also stops pprof when the admin listener fails
	if s.PprofAddr != "" {
		if _, err := admin.ServePprof(ctx, s.PprofAddr, log); err != nil {
			return err
		}
	}
	if !s.listening {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	var adminErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		adminErr = s.Admin.Serve(ctx)
	}()
	log.Info("started", "service", s.Name, "admin", "http://"+s.Admin.Addr())
	err := s.Server.Run(ctx)
	cancel()
	wg.Wait()
	log.Info("stopped", "service", s.Name)
	return errors.Join(err, adminErr)
}

// Close releases what Build opened (not what Deps provided).
func (s *Service) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// setServer finishes a Build: the service answers /readyz.
func (s *Service) setServer(srv Server) *Service {
	s.Server = srv
	s.Admin.AddCheck(s.Name, srv.Ready)
	return s
}

// Store is the -store-uri setting of the services with a store.
type Store struct{ URI string }

// RegisterFlags adds -store-uri.
func (f *Store) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &f.URI, "store-uri", "HERALD_STORE_URI", "./data/herald.db",
		"store: a SQLite file path (sqlite://PATH) or a MongoDB URI (mongodb://…)")
}

// open returns deps.Store, or opens the URI and registers its Close on svc.
func (f *Store) open(ctx context.Context, deps Deps, svc *Service) (store.Store, error) {
	if deps.Store != nil {
		return deps.Store, nil
	}
	st, err := storeopen.Open(ctx, f.URI)
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	svc.closers = append(svc.closers, st.Close)
	return st, nil
}

// openArchive connects to the S3 archive.
func openArchive(ctx context.Context, cfg archive.Config) (*archive.Client, error) {
	arc, err := archive.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the S3 archive: %w", err)
	}
	return arc, nil
}

// Secret is the HS256 secret of client tokens (-token-secret).
type Secret struct{ Secret string }

// RegisterFlags adds -token-secret with usage.
func (f *Secret) RegisterFlags(fs *flag.FlagSet, usage string) {
	config.String(fs, &f.Secret, "token-secret", "HERALD_TOKEN_SECRET", "", usage)
}

// verifier returns the token verifier; the secret is required.
func (f *Secret) verifier() (*auth.Verifier, error) {
	if f.Secret == "" {
		return nil, errors.New("no token secret: set HERALD_TOKEN_SECRET (only 'herald dev' has a built-in dev secret)")
	}
	return auth.NewVerifier(f.Secret), nil
}

// Admin is a service's admin listener and optional pprof listener.
type Admin struct{ Addr, Pprof string }

// RegisterFlags adds -<service>-admin-addr (deprecated alias -admin-addr)
// and, with pprof, -<service>-pprof-addr (alias -pprof-addr); the relay has
// its pprof setting in relay.Config.
func (f *Admin) RegisterFlags(fs *flag.FlagSet, service, def string, pprof bool) {
	key := "HERALD_" + upper(service) + "_ADMIN_ADDR"
	config.String(fs, &f.Addr, config.FlagName(key), key, def, "admin listener (/metrics, /healthz, /readyz)")
	config.Deprecated(fs, "admin-addr", config.FlagName(key))
	if pprof {
		key := "HERALD_" + upper(service) + "_PPROF_ADDR"
		config.String(fs, &f.Pprof, config.FlagName(key), key, "", "serve net/http/pprof on this address (empty: off; never public)")
		config.Deprecated(fs, "pprof-addr", config.FlagName(key))
	}
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

// Set is the four commands of one system, in start order: controller,
// cacher, management, relay (shutdown goes in reverse).
type Set struct {
	Controller *Controller
	Cacher     *Cacher
	Management *Management
	Relay      *Relay
}

// NewSet returns the four commands with their flags registered.
func NewSet() *Set {
	return &Set{Controller: NewController(), Cacher: NewCacher(), Management: NewManagement(), Relay: NewRelay()}
}

// Commands returns the commands in start order.
func (s *Set) Commands() []Command {
	return []Command{s.Controller, s.Cacher, s.Management, s.Relay}
}
