// Package devstack runs the whole of Herald in one process on embedded
// engines: kfake (Kafka), the SQLite store (or HERALD_STORE_URI) and
// versitygw (S3), plus the four services, each with its own admin server.
// `herald dev` and the end-to-end, dashboards and load tests use it. It
// starts the engines and then builds every service through the same
// assembly commands the production subcommands run, with the engines'
// addresses filled into the same settings, so what a newcomer runs and what
// the tests prove is the operators' wiring.
//
// Concurrency: Start launches one goroutine per service; Wait (or the
// cancellation of Start's context) stops them in reverse dependency order
// and waits for all of them.
package devstack

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-chat/herald/assembly"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/internal/engines/kfake"
	"github.com/herald-chat/herald/internal/engines/s3local"
	"github.com/herald-chat/herald/internal/kafka"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/storeopen"
	"github.com/herald-chat/herald/management/webui"
)

// Dev credentials of the embedded S3. They only guard a loopback listener.
const (
	DevS3AccessKey = "herald"
	DevS3SecretKey = "herald-dev-s3-secret"
)

// Options configure the stack. Zero values take the services' settings
// (flag > HERALD_* environment > default, see Services) and the defaults of
// docs/architecture.md.
type Options struct {
	DataDir     string // default ./data (-data-dir, HERALD_DATA_DIR)
	EnginesOnly bool   // start Kafka, store file and S3 only

	// Listen addresses. "auto" picks a free loopback port (tests); empty
	// takes the services' settings (-relay-addr, -relay-admin-addr, …;
	// Kafka and S3 listen where -kafka-brokers and -s3-endpoint point).
	KafkaAddr, S3Addr                                         string
	RelayAddr, ControllerAddr, ManagementAddr, CacherAddr     string
	RelayAdmin, ControllerAdmin, ManagementAdmin, CacherAdmin string

	TokenSecret string // default: -token-secret (HERALD_TOKEN_SECRET), else auth.DevSecret

	// KafkaRetention is how long the embedded Kafka keeps records (0 =
	// forever). `herald dev` defaults it to Kafka's own default, 7 days.
	KafkaRetention time.Duration

	// Archive settings override the cacher's flags when non-zero.
	ChunkSize int
	MinAge    time.Duration
	Interval  time.Duration

	// Services are the four service commands whose settings the stack
	// builds from; nil: NewSet's (defaults from the HERALD_* environment).
	// RegisterFlags sets it, bound to the dev flag set.
	Services *assembly.Set

	Log *slog.Logger

	flags *flag.FlagSet // the parsed dev flag set, when RegisterFlags was used
}

// RegisterFlags binds the options of `herald dev` to fs: its own flags and
// every flag of the four services it runs (one flag per variable, see
// config.Union), except Kafka TLS and SASL (the embedded Kafka speaks
// plaintext). Engine flags say where the embedded engines listen
// (-kafka-brokers, -s3-endpoint, -s3-access-key, -s3-secret-key) or keep
// their data (-store-uri, default in -data-dir).
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	config.String(fs, &o.DataDir, "data-dir", "HERALD_DATA_DIR", "./data", "where the embedded engines keep their data")
	config.Duration(fs, &o.KafkaRetention, "dev-kafka-retention", "HERALD_DEV_KAFKA_RETENTION", 7*24*time.Hour,
		"how long the embedded Kafka keeps records, as Kafka's retention.ms (0 = forever); a controller stopped for longer loses what was published meanwhile")
	config.Deprecated(fs, "kafka-retention", "dev-kafka-retention")
	fs.BoolVar(&o.EnginesOnly, "engines-only", false, "start only Kafka, the store file and S3 (run the services as separate processes)")
	o.Services = assembly.NewSet()
	var sets []*flag.FlagSet
	for _, c := range o.Services.Commands() {
		sets = append(sets, c.FlagSet())
	}
	config.Union(fs, func(name string) bool {
		return strings.HasPrefix(name, "kafka-tls") || strings.HasPrefix(name, "kafka-sasl")
	}, sets...)
	o.flags = fs
}

// setByUser reports whether the flag name was given or its variable key is
// set.
func (o *Options) setByUser(name, key string) bool {
	if os.Getenv(key) != "" {
		return true
	}
	set := false
	if o.flags != nil {
		o.flags.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	}
	return set
}

// Ephemeral returns Options for a throwaway stack (tests, benchmarks): data
// in dataDir and every listener on a free loopback port, so several stacks
// and a running `herald dev` never collide.
func Ephemeral(dataDir string) Options {
	const a = "auto"
	return Options{
		DataDir:   dataDir,
		KafkaAddr: a, S3Addr: a,
		RelayAddr: a, ControllerAddr: a, ManagementAddr: a, CacherAddr: a,
		RelayAdmin: a, ControllerAdmin: a, ManagementAdmin: a, CacherAdmin: a,
	}
}

// Stack is a running dev system.
type Stack struct {
	Opts       Options
	Brokers    []string
	Topic      string
	Partitions int32
	StoreURI   string
	S3Endpoint string
	Bucket     string
	// S3AccessKey and S3SecretKey are the embedded gateway's root
	// credentials: -s3-access-key / -s3-secret-key (HERALD_S3_ACCESS_KEY /
	// HERALD_S3_SECRET_KEY), else the dev ones.
	S3AccessKey, S3SecretKey string
	TokenSecret              string

	// Service addresses (empty with EnginesOnly).
	RelayURL, ControllerAddr, ManagementURL, CacherURL string
	Admin                                              map[string]string

	Store store.Store

	kafka *kfake.Kafka
	s3    *s3local.Server

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running []running // services in start order
	mu      sync.Mutex
	errs    []error
	closed  sync.Once
}

// Start starts the engines and, unless EnginesOnly, the four services. It
// returns once every listener is bound; the services run until ctx is
// cancelled or Close is called.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.Services == nil {
		o.Services = assembly.NewSet()
	}
	svcs := o.Services
	if o.DataDir == "" {
		o.DataDir = config.Env("HERALD_DATA_DIR", "./data")
	}
	if o.TokenSecret == "" {
		o.TokenSecret = svcs.Relay.Secret.Secret
	}
	if o.TokenSecret == "" {
		o.TokenSecret = auth.DevSecret
	}
	// Unset addresses take the services' settings, so the dev stack moves
	// with the same flags and variables as the separate services.
	defaults := map[*string]string{
		&o.KafkaAddr:       firstOr(svcs.Controller.Config.Brokers, "127.0.0.1:9092"),
		&o.S3Addr:          hostPort(svcs.Cacher.S3.Endpoint),
		&o.RelayAddr:       svcs.Relay.Config.Addr,
		&o.ControllerAddr:  svcs.Controller.Config.Addr,
		&o.ManagementAddr:  svcs.Management.Config.Addr,
		&o.CacherAddr:      svcs.Cacher.Config.Addr,
		&o.RelayAdmin:      svcs.Relay.Admin.Addr,
		&o.ControllerAdmin: svcs.Controller.Admin.Addr,
		&o.ManagementAdmin: svcs.Management.Admin.Addr,
		&o.CacherAdmin:     svcs.Cacher.Admin.Addr,
	}
	for p, def := range defaults {
		switch *p {
		case "":
			*p = def
		case "auto":
			a, err := FreeAddr()
			if err != nil {
				return nil, err
			}
			*p = a
		}
	}
	// versitygw's POSIX backend changes the process working directory to its
	// root, so every path must be absolute before it starts.
	abs, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory %q: %w", o.DataDir, err)
	}
	o.DataDir = abs
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}

	s := &Stack{Opts: o, TokenSecret: o.TokenSecret, Admin: map[string]string{},
		S3AccessKey: orDefault(svcs.Cacher.S3.AccessKey, DevS3AccessKey),
		S3SecretKey: orDefault(svcs.Cacher.S3.SecretKey, DevS3SecretKey)}
	s.fillSettings()
	// Check every setting before starting anything.
	cmds := svcs.Commands()
	if o.EnginesOnly {
		cmds = cmds[:1] // the controller's: topic and partitions
	}
	for _, c := range cmds {
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name(), err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	ok := false
	defer func() {
		if !ok {
			cancel()
			s.wg.Wait()
			s.closeEngines()
		}
	}()

	// Engines.
	s.Topic, s.Partitions = svcs.Controller.Config.Topic, svcs.Controller.Config.Partitions
	kport, err := port(o.KafkaAddr)
	if err != nil {
		return nil, err
	}
	s.kafka, err = kfake.Start(ctx, kfake.Options{
		Port: kport, DataDir: filepath.Join(o.DataDir, "kafka"),
		Topic: s.Topic, Partitions: s.Partitions,
		Retention: o.KafkaRetention,
	})
	if err != nil {
		return nil, err
	}
	s.Brokers = s.kafka.Brokers()

	s.StoreURI = filepath.Join(o.DataDir, "herald.db")
	if o.setByUser("store-uri", "HERALD_STORE_URI") {
		s.StoreURI = svcs.Controller.Store.URI
	}
	if s.StoreURI, err = absStorePath(s.StoreURI); err != nil {
		return nil, err
	}
	s.Store, err = storeopen.Open(ctx, s.StoreURI)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", s.StoreURI, err)
	}

	s.s3, err = s3local.Start(ctx, s3local.Options{
		Addr: o.S3Addr, Dir: filepath.Join(o.DataDir, "s3"),
		AccessKey: s.S3AccessKey, SecretKey: s.S3SecretKey,
	})
	if err != nil {
		return nil, err
	}
	s.S3Endpoint = s.s3.Endpoint()
	s.Bucket = svcs.Cacher.S3.Bucket

	if o.EnginesOnly {
		ok = true
		return s, nil
	}
	err = s.startServices(ctx)
	s.wg.Add(1)
	go s.stopServices(ctx)
	if err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// fillSettings puts the stack's addresses, secrets and overrides into the
// services' settings (before Validate).
func (s *Stack) fillSettings() {
	o, svcs := s.Opts, s.Opts.Services
	svcs.Controller.Config.Addr = o.ControllerAddr
	svcs.Cacher.Config.Addr = o.CacherAddr
	svcs.Management.Config.Addr = o.ManagementAddr
	svcs.Relay.Config.Addr = o.RelayAddr
	svcs.Relay.Config.ManagementURL = "http://" + o.ManagementAddr
	svcs.Controller.Admin.Addr, svcs.Cacher.Admin.Addr = o.ControllerAdmin, o.CacherAdmin
	svcs.Management.Admin.Addr, svcs.Relay.Admin.Addr = o.ManagementAdmin, o.RelayAdmin
	// The embedded Kafka speaks plaintext without authentication.
	svcs.Controller.Kafka, svcs.Relay.Kafka, svcs.Management.Kafka = kafka.Config{}, kafka.Config{}, kafka.Config{}
	for _, sec := range []*assembly.Secret{&svcs.Relay.Secret, &svcs.Management.Secret, &svcs.Cacher.Secret} {
		sec.Secret = o.TokenSecret
	}
	for _, s3 := range []*struct{ AccessKey, SecretKey *string }{
		{&svcs.Cacher.S3.AccessKey, &svcs.Cacher.S3.SecretKey},
		{&svcs.Management.S3.AccessKey, &svcs.Management.S3.SecretKey},
	} {
		*s3.AccessKey, *s3.SecretKey = s.S3AccessKey, s.S3SecretKey
	}
	// The dev cacher API is open (loopback dev, as the README's curl shows)
	// unless -cacher-require-admin / HERALD_CACHER_REQUIRE_ADMIN asks for
	// admin tokens.
	if !o.setByUser("cacher-require-admin", "HERALD_CACHER_REQUIRE_ADMIN") {
		svcs.Cacher.Config.RequireAdmin = false
	}
	// The dev server API is open (loopback dev, like the cacher API) unless
	// a key is given (-api-key / HERALD_API_KEY).
	svcs.Management.Config.APIOpen = svcs.Management.Config.APIKey == ""
	// The chat page, with tokens for any name: dev only.
	svcs.Management.Config.Web.Enabled = true
	svcs.Management.Config.DevTokens = &webui.DevTokens{Secret: o.TokenSecret, RelayURL: "ws://" + o.RelayAddr + "/connection/websocket"}
	if o.ChunkSize > 0 {
		svcs.Cacher.S3.ChunkSize, svcs.Management.S3.ChunkSize = o.ChunkSize, o.ChunkSize
	}
	if o.MinAge > 0 || o.ChunkSize > 0 {
		svcs.Cacher.Config.MinAge = o.MinAge
	}
	if o.Interval > 0 {
		svcs.Cacher.Config.Interval = o.Interval
	}
}

// startServices points the validated settings at the engines, builds the
// services in start order and runs each with its admin server.
func (s *Stack) startServices(ctx context.Context) error {
	o, svcs := s.Opts, s.Opts.Services
	svcs.Controller.Config.Brokers, svcs.Relay.Config.Brokers = s.Brokers, s.Brokers
	svcs.Relay.Config.Controllers = []string{o.ControllerAddr}
	svcs.Relay.Config.Topic, svcs.Relay.Config.Partitions = s.Topic, int(s.Partitions)
	mc := &svcs.Management.Config
	mc.Brokers, mc.Controllers, mc.Topic, mc.Partitions = s.Brokers, []string{o.ControllerAddr}, s.Topic, int(s.Partitions)

	svcs.Cacher.S3.Endpoint, svcs.Management.S3.Endpoint = s.S3Endpoint, s.S3Endpoint
	svcs.Controller.Store.URI, svcs.Cacher.Store.URI, svcs.Management.Store.URI = s.StoreURI, s.StoreURI, s.StoreURI

	for _, c := range svcs.Commands() {
		svc, err := c.Build(ctx, o.Log, assembly.Deps{Store: s.Store})
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name(), err)
		}
		if err := svc.Listen(); err != nil {
			return err
		}
		s.Admin[svc.Name] = "http://" + svc.Admin.Addr()
		// Each service has its own context so that shutdown can go in
		// reverse start order: relays drain first, controllers flush last.
		svcCtx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		s.goRun(&wg, svc.Name, func() error { return svc.Serve(svcCtx, o.Log) })
		s.running = append(s.running, running{svc.Name, stop, &wg})
	}
	s.RelayURL = "ws://" + o.RelayAddr + "/connection/websocket"
	s.ControllerAddr = o.ControllerAddr
	s.ManagementURL = "http://" + o.ManagementAddr
	s.CacherURL = "http://" + o.CacherAddr

	// Readiness: wait until every service answers /readyz.
	return s.waitReady(ctx, 60*time.Second)
}

func firstOr(list []string, def string) string {
	if len(list) > 0 {
		return list[0]
	}
	return def
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

type running struct {
	name string
	stop context.CancelFunc
	wg   *sync.WaitGroup
}

// stopServices waits for the stack's context, then stops the services one
// by one in reverse start order.
func (s *Stack) stopServices(ctx context.Context) {
	defer s.wg.Done()
	<-ctx.Done()
	for i := len(s.running) - 1; i >= 0; i-- {
		r := s.running[i]
		r.stop()
		r.wg.Wait()
	}
}

func (s *Stack) goRun(wg *sync.WaitGroup, name string, f func() error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			s.Opts.Log.Error("service stopped", "service", name, "err", err)
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("%s: %w", name, err))
			s.mu.Unlock()
			s.cancel() // one service failing stops the stack
		}
	}()
}

// Wait blocks until the stack stopped (its context was cancelled or a service
// failed), closes the engines and returns the services' errors.
func (s *Stack) Wait() error {
	s.wg.Wait()
	s.closeEngines()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

// Close stops everything and waits.
func (s *Stack) Close() error {
	s.cancel()
	return s.Wait()
}

func (s *Stack) closeEngines() {
	s.closed.Do(s.doCloseEngines)
}

func (s *Stack) doCloseEngines() {
	if s.Store != nil {
		_ = s.Store.Close()
	}
	if s.s3 != nil {
		s.s3.Close()
	}
	if s.kafka != nil {
		s.kafka.Close()
	}
}

func (s *Stack) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for name, base := range s.Admin {
		for {
			err := getOK(ctx, base+"/readyz")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ready after %s: %w", name, timeout, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

var (
	handedMu sync.Mutex
	handed   = map[int]bool{} // ports FreeAddr returned
)

// FreeAddr returns a currently free 127.0.0.1 address for a listener that
// is bound later. It picks ports below the kernel's ephemeral range
// (32768-60999 here): a port taken from that range by a probe listener can
// be handed to any outgoing connection before the real listener binds it,
// which made parallel test packages fail with "address already in use".
// It never hands out the same port twice in a process: a port picked for
// one listener and not bound yet looks free, and the cluster tests, which
// pick some twenty before starting anything, got the same one for two
// listeners about once in 60 runs.
func FreeAddr() (string, error) {
	handedMu.Lock()
	defer handedMu.Unlock()
	for range 100 {
		p := 20000 + rand.IntN(12000)
		if handed[p] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		handed[p] = true
		return addr, nil
	}
	return "", errors.New("no free port in 20000-31999 on 127.0.0.1")
}

func port(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("bad address %q: %w", addr, err)
	}
	return strconv.Atoi(p)
}

// absStorePath makes a SQLite store path absolute (see the note on
// versitygw's working directory in Start); other URIs are returned as is.
func absStorePath(uri string) (string, error) {
	if strings.Contains(uri, "://") && !strings.HasPrefix(uri, "sqlite://") {
		return uri, nil
	}
	prefix, path := "", uri
	for _, p := range []string{"sqlite://", "file:"} {
		if strings.HasPrefix(uri, p) {
			prefix, path = p, strings.TrimPrefix(uri, p)
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("store path %q: %w", path, err)
	}
	return prefix + abs, nil
}

// hostPort returns the host:port of an http(s) URL (or the input when it is
// not a URL).
func hostPort(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		return u.Host
	}
	return endpoint
}
