// Package s3local runs the versitygw S3 gateway in-process with its POSIX
// backend, for `herald dev` and tests: real S3 protocol with real SigV4
// authentication, objects as files under a data directory.
//
// Limits inherited from versitygw:
//   - Only one gateway may run per process at a time (embedgw keeps global
//     state). Start returns ErrAlreadyRunning otherwise; tests should share
//     one gateway per test binary (TestMain) and use a bucket per test.
//   - The POSIX backend changes the process working directory to the
//     gateway's root (it resolves buckets relative to the cwd). Callers must
//     make every other path absolute before calling Start.
//
// Concurrency: a Server is safe for concurrent use; Close may be called
// more than once.
package s3local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"
)

// ErrAlreadyRunning is returned by Start when a gateway already runs in this
// process.
var ErrAlreadyRunning = errors.New("s3local: a gateway already runs in this process")

// Options configure Start.
type Options struct {
	// Addr is the listen address, host:port. Port 0 picks a free port.
	// Default "127.0.0.1:0".
	Addr string
	// Dir is the data directory (created if missing). Objects live in
	// Dir/buckets; object metadata in extended attributes, or in
	// Dir/meta when the filesystem has no user xattrs. Required.
	Dir string
	// AccessKey and SecretKey are the root credentials. Required.
	AccessKey, SecretKey string
	// Region reported to clients. Default "us-east-1".
	Region string
	// StartTimeout bounds how long Start waits for the listener. Default 10s.
	StartTimeout time.Duration
}

// Server is a running gateway.
type Server struct {
	endpoint string
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // set before done is closed

	closeOnce sync.Once
}

var running sync.Mutex // held while a gateway of this package runs

// Start runs a gateway and returns once it accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("s3local: Dir is required")
	}
	if opts.AccessKey == "" || opts.SecretKey == "" {
		return nil, errors.New("s3local: AccessKey and SecretKey are required")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if !running.TryLock() {
		return nil, ErrAlreadyRunning
	}
	s, err := start(ctx, opts)
	if err != nil {
		running.Unlock()
		return nil, err
	}
	return s, nil
}

func start(ctx context.Context, opts Options) (*Server, error) {
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolving data dir: %w", err)
	}
	root := filepath.Join(dir, "buckets")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	var ms meta.MetadataStorer = meta.XattrMeta{}
	if !xattrSupported(root) {
		sidecar := filepath.Join(dir, "meta")
		if err := os.MkdirAll(sidecar, 0o755); err != nil {
			return nil, fmt.Errorf("creating metadata dir: %w", err)
		}
		sc, err := meta.NewSideCar(sidecar)
		if err != nil {
			return nil, fmt.Errorf("opening sidecar metadata: %w", err)
		}
		ms = sc
	}
	addr, err := resolveAddr(opts.Addr)
	if err != nil {
		return nil, err
	}
	be, err := posix.New(root, ms, posix.PosixOpts{})
	if err != nil {
		return nil, fmt.Errorf("opening posix backend: %w", err)
	}

	listening := make(chan struct{})
	var once sync.Once
	cfg := &embedgw.Config{
		RootUserAccess:    opts.AccessKey,
		RootUserSecret:    opts.SecretKey,
		Region:            opts.Region,
		Ports:             []string{addr},
		MaxConnections:    250,
		MaxRequests:       100,
		MultipartMaxParts: 10000,
		Quiet:             true,
		KeepAlive:         true,
		S3Options: []s3api.Option{
			s3api.WithOnListen(func() { once.Do(func() { close(listening) }) }),
		},
	}

	gctx, cancel := context.WithCancel(context.Background())
	s := &Server{endpoint: "http://" + addr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer running.Unlock()
		s.err = embedgw.RunVersityGW(gctx, be, cfg)
	}()

	timer := time.NewTimer(opts.StartTimeout)
	defer timer.Stop()
	select {
	case <-listening:
	case <-s.done:
		cancel()
		return nil, fmt.Errorf("starting versitygw on %s: %w", addr, orExited(s.err))
	case <-timer.C:
		s.Close()
		return nil, fmt.Errorf("starting versitygw on %s: not listening after %s", addr, opts.StartTimeout)
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("starting versitygw: %w", ctx.Err())
	}
	// The OnListen hook fires just before accept; make sure a dial works.
	if err := waitDial(addr, opts.StartTimeout); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func orExited(err error) error {
	if err == nil {
		return errors.New("gateway exited")
	}
	return err
}

// Endpoint returns the gateway URL, http://host:port.
func (s *Server) Endpoint() string { return s.endpoint }

// Close stops the gateway and waits for it to exit. After Close another
// gateway may be started in this process.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
	})
}

// resolveAddr replaces port 0 with a free port: the gateway does not report
// the port it bound.
func resolveAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("s3local: bad Addr %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if port != "0" {
		return net.JoinHostPort(host, port), nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func waitDial(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dialing versitygw on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
