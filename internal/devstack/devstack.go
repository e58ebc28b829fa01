// Package devstack runs the whole of Herald in one process on embedded
// engines: kfake (Kafka), the SQLite store (or HERALD_STORE_URI) and
// versitygw (S3), plus the four services, each with its own admin server.
// `herald dev` and the end-to-end tests use it, so what a newcomer runs is
// what the tests prove.
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

	"github.com/herald-chat/herald/cacher"
	"github.com/herald-chat/herald/controller"
	"github.com/herald-chat/herald/internal/admin"
	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/config"
	"github.com/herald-chat/herald/internal/engines/kafka"
	"github.com/herald-chat/herald/internal/engines/s3local"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/storeopen"
	"github.com/herald-chat/herald/management"
	"github.com/herald-chat/herald/management/webui"
	"github.com/herald-chat/herald/relay"
)

// Dev credentials of the embedded S3. They only guard a loopback listener.
const (
	DevS3AccessKey = "herald"
	DevS3SecretKey = "herald-dev-s3-secret"
)

// Options configure the stack. Zero values take the defaults of DESIGN.md
// (and the HERALD_* environment, through each service's flags).
type Options struct {
	DataDir     string // default ./data (HERALD_DATA_DIR)
	EnginesOnly bool   // start Kafka, store file and S3 only

	// Listen addresses. "auto" picks a free loopback port (tests).
	KafkaAddr, S3Addr                                         string
	RelayAddr, ControllerAddr, ManagementAddr, CacherAddr     string
	RelayAdmin, ControllerAdmin, ManagementAdmin, CacherAdmin string

	TokenSecret string // default: HERALD_TOKEN_SECRET, else auth.DevSecret

	// KafkaRetention is how long the embedded Kafka keeps records (0 =
	// forever). `herald dev` defaults it to Kafka's own default, 7 days.
	KafkaRetention time.Duration

	// Archive settings override the cacher's flags when non-zero.
	ChunkSize int
	MinAge    time.Duration
	Interval  time.Duration

	Log *slog.Logger
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
	// credentials: HERALD_S3_ACCESS_KEY / HERALD_S3_SECRET_KEY, else the dev
	// ones.
	S3AccessKey, S3SecretKey string
	TokenSecret              string

	// Service addresses (empty with EnginesOnly).
	RelayURL, ControllerAddr, ManagementURL, CacherURL string
	Admin                                              map[string]string

	Store store.Store

	kafka *kafka.Kafka
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
	if o.DataDir == "" {
		o.DataDir = config.Env("HERALD_DATA_DIR", "./data")
	}
	if o.TokenSecret == "" {
		o.TokenSecret = config.Env("HERALD_TOKEN_SECRET", auth.DevSecret)
	}
	// Unset addresses take the documented HERALD_* variables, so the dev
	// stack moves with the same settings as the separate services.
	defaults := map[*string]string{
		&o.KafkaAddr:       config.List(config.Env("HERALD_KAFKA_BROKERS", "127.0.0.1:9092"))[0],
		&o.S3Addr:          hostPort(config.Env("HERALD_S3_ENDPOINT", "http://127.0.0.1:9000")),
		&o.RelayAddr:       config.Env("HERALD_RELAY_ADDR", "127.0.0.1:8000"),
		&o.ControllerAddr:  config.Env("HERALD_CONTROLLER_ADDR", "127.0.0.1:8090"),
		&o.ManagementAddr:  config.Env("HERALD_MANAGEMENT_ADDR", "127.0.0.1:8080"),
		&o.CacherAddr:      config.Env("HERALD_CACHER_ADDR", "127.0.0.1:8081"),
		&o.RelayAdmin:      config.Env("HERALD_RELAY_ADMIN_ADDR", "127.0.0.1:9100"),
		&o.ControllerAdmin: config.Env("HERALD_CONTROLLER_ADMIN_ADDR", "127.0.0.1:9101"),
		&o.ManagementAdmin: config.Env("HERALD_MANAGEMENT_ADMIN_ADDR", "127.0.0.1:9102"),
		&o.CacherAdmin:     config.Env("HERALD_CACHER_ADMIN_ADDR", "127.0.0.1:9103"),
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

	ctx, cancel := context.WithCancel(ctx)
	s := &Stack{Opts: o, cancel: cancel, TokenSecret: o.TokenSecret, Admin: map[string]string{},
		S3AccessKey: config.Env("HERALD_S3_ACCESS_KEY", DevS3AccessKey),
		S3SecretKey: config.Env("HERALD_S3_SECRET_KEY", DevS3SecretKey)}
	ok := false
	defer func() {
		if !ok {
			cancel()
			s.wg.Wait()
			s.closeEngines()
		}
	}()

	// Engines.
	s.Topic = config.Env("HERALD_KAFKA_TOPIC", "herald.messages")
	parts, err := strconv.Atoi(config.Env("HERALD_KAFKA_PARTITIONS", "12"))
	if err != nil || parts <= 0 {
		return nil, fmt.Errorf("HERALD_KAFKA_PARTITIONS must be a positive integer")
	}
	s.Partitions = int32(parts)
	kport, err := port(o.KafkaAddr)
	if err != nil {
		return nil, err
	}
	s.kafka, err = kafka.Start(ctx, kafka.Options{
		Port: kport, DataDir: filepath.Join(o.DataDir, "kafka"),
		Topic: s.Topic, Partitions: s.Partitions,
		Retention: o.KafkaRetention,
	})
	if err != nil {
		return nil, err
	}
	s.Brokers = s.kafka.Brokers()

	s.StoreURI = config.Env("HERALD_STORE_URI", filepath.Join(o.DataDir, "herald.db"))
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
	s.Bucket = config.Env("HERALD_S3_BUCKET", "herald-archive")

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

func (s *Stack) startServices(ctx context.Context) error {
	o := s.Opts
	log := o.Log
	verifier := auth.NewVerifier(o.TokenSecret)

	// Each service gets its flags' defaults (so HERALD_* env applies), then
	// the stack's addresses and engines.
	var ccfg controller.Config
	fill(ccfg.RegisterFlags)
	ccfg.Addr, ccfg.Brokers, ccfg.Topic, ccfg.Partitions = o.ControllerAddr, s.Brokers, s.Topic, s.Partitions
	cadm := admin.New(log)
	ctrl, err := controller.New(ccfg, s.Store, log, cadm.Registry)
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	cadm.AddCheck("controller", ctrl.Ready)

	var acfg archive.Config
	acfg.Endpoint, acfg.Bucket = s.S3Endpoint, s.Bucket
	acfg.AccessKey, acfg.SecretKey = s.S3AccessKey, s.S3SecretKey

	var kcfg cacher.Config
	fill(kcfg.RegisterFlags)
	kcfg.Addr = o.CacherAddr
	if o.ChunkSize > 0 {
		kcfg.ChunkSize = o.ChunkSize
	}
	if o.MinAge > 0 || o.ChunkSize > 0 {
		kcfg.MinAge = o.MinAge
	}
	if o.Interval > 0 {
		kcfg.Interval = o.Interval
	}
	acfg.ChunkSize = kcfg.ChunkSize
	arc, err := archive.New(ctx, acfg)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	kadm := admin.New(log)
	cach, err := cacher.New(kcfg, s.Store, arc, log, kadm.Registry)
	if err != nil {
		return fmt.Errorf("cacher: %w", err)
	}
	kadm.AddCheck("cacher", cach.Ready)

	var mcfg management.Config
	fill(mcfg.RegisterFlags)
	mcfg.Addr = o.ManagementAddr
	// The chat page, with tokens for any name: dev only.
	mcfg.Web.Enabled = true
	mcfg.DevTokens = &webui.DevTokens{Secret: o.TokenSecret, RelayURL: "ws://" + o.RelayAddr + "/connection/websocket"}
	madm := admin.New(log)
	mgmt, err := management.New(mcfg, s.Store, arc, verifier, log, madm.Registry)
	if err != nil {
		return fmt.Errorf("management: %w", err)
	}
	madm.AddCheck("management", mgmt.Ready)

	var rcfg relay.Config
	fill(rcfg.RegisterFlags)
	if err := rcfg.Validate(); err != nil { // also splits the list flags
		return fmt.Errorf("relay config: %w", err)
	}
	rcfg.Controllers, rcfg.Brokers = []string{o.ControllerAddr}, s.Brokers
	rcfg.Addr, rcfg.Topic, rcfg.Partitions = o.RelayAddr, s.Topic, int(s.Partitions)
	rcfg.ManagementURL = "http://" + o.ManagementAddr
	radm := admin.New(log)
	rel, err := relay.New(rcfg, verifier, log, radm.Registry)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	radm.AddCheck("relay", rel.Ready)

	type runner interface{ Run(context.Context) error }
	for _, svc := range []struct {
		name  string
		admin *admin.Server
		addr  string
		run   runner
	}{
		{"controller", cadm, o.ControllerAdmin, ctrl},
		{"cacher", kadm, o.CacherAdmin, cach},
		{"management", madm, o.ManagementAdmin, mgmt},
		{"relay", radm, o.RelayAdmin, rel},
	} {
		if err := svc.admin.Listen(svc.addr); err != nil {
			return fmt.Errorf("%s admin listener: %w", svc.name, err)
		}
		s.Admin[svc.name] = "http://" + svc.admin.Addr()
		// Each service has its own context so that shutdown can go in
		// reverse start order: relays drain first, controllers flush last.
		svcCtx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		s.goRun(&wg, svc.name+" admin", func() error { return svc.admin.Serve(svcCtx) })
		s.goRun(&wg, svc.name, func() error { return svc.run.Run(svcCtx) })
		s.running = append(s.running, running{svc.name, stop, &wg})
	}
	s.RelayURL = "ws://" + o.RelayAddr + "/connection/websocket"
	s.ControllerAddr = o.ControllerAddr
	s.ManagementURL = "http://" + o.ManagementAddr
	s.CacherURL = "http://" + o.CacherAddr

	// Readiness: wait until every service answers /readyz.
	return s.waitReady(ctx, 60*time.Second)
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

// fill gives a service config its flag defaults (documented default, or the
// HERALD_* environment).
func fill(register func(*flag.FlagSet)) {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	register(fs)
	_ = fs.Parse(nil)
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
