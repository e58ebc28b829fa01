package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-chat/herald/internal/kafka"
	"github.com/herald-chat/herald/internal/rpcflow"
	"github.com/herald-chat/herald/internal/store"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxRecvBytes bounds one inbound gRPC message (a large interest delta of a
// relay that resubscribes many channels at once).
const maxRecvBytes = 16 << 20

// Server is one controller: a consumer group member and a Router gRPC
// server. Create it with New and run it with Run.
type Server struct {
	heraldv1.UnimplementedRouterServer

	cfg   Config
	store store.Store
	log   *slog.Logger
	m     *metrics
	extra []kgo.Opt

	ln   net.Listener
	grpc *grpc.Server

	interest  *interest
	presence  *presence
	cmds      commands  // Control calls waiting for relay replies
	startedAt time.Time // New's time (info's uptime)

	streamsMu     sync.Mutex
	streams       map[*relayStream]struct{}
	streamsClosed bool
	recvWG        sync.WaitGroup // relay receive goroutines

	ownership atomic.Pointer[heraldv1.Ownership]
	numParts  atomic.Int32 // the topic's partition count, set by Run
	// streamID identifies the message log (the topic's Kafka ID); channel
	// epochs derive from it. Set by Run before serving, read-only after.
	streamID string

	partsMu sync.RWMutex
	parts   map[int32]*partState
	sw      *storeWriter // writes every owned partition's batches

	started atomic.Bool
	cl      atomic.Pointer[kgo.Client]
	fetch   *fetcher // set by Run before the group is joined
	closing atomic.Bool

	// crashOnStop (tests) makes Run stop without flushing the batch
	// writers, as a crash would.
	crashOnStop bool
}

// New validates cfg, registers the metrics on reg (nil: not registered) and
// binds the gRPC listener. Kafka is not contacted before Run. extra options
// are appended to the Kafka client's (tests use them to shorten session
// timeouts).
func New(cfg Config, st store.Store, log *slog.Logger, reg prometheus.Registerer, extra ...kgo.Opt) (*Server, error) {
	if err := cfg.Validate(); err != nil { // also fills the defaults of zero settings
		return nil, fmt.Errorf("controller config: %w", err)
	}
	if st == nil {
		return nil, errors.New("controller: nil store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	m.maxBacklog.Set(float64(cfg.MaxBacklog))
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s (HERALD_CONTROLLER_ADDR): %w", cfg.Addr, err)
	}
	s := &Server{
		cfg:     cfg,
		store:   st,
		log:     log.With("service", "controller"),
		m:       m,
		extra:   extra,
		ln:      ln,
		streams: make(map[*relayStream]struct{}),
		parts:   make(map[int32]*partState),

		startedAt: time.Now(),
	}
	s.interest = newInterest(m)
	s.presence = newPresence(s)
	s.sw = newStoreWriter(s)
	s.grpc = grpc.NewServer(append(rpcflow.ServerOptions(), grpc.WaitForHandlers(true), grpc.MaxRecvMsgSize(maxRecvBytes))...)
	heraldv1.RegisterRouterServer(s.grpc, s)
	s.ownership.Store(&heraldv1.Ownership{ControllerId: cfg.ID, PartitionCount: cfg.Partitions})
	return s, nil
}

// Addr returns the address the gRPC server listens on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ID returns the controller id announced to relays.
func (s *Server) ID() string { return s.cfg.ID }

// Run ensures the topic exists, joins the consumer group, serves gRPC and
// blocks until ctx is canceled; then it shuts down gracefully (relay streams
// closed, gRPC stopped, batch writers flushed, group left, client closed) and
// returns nil. It returns an error if it cannot start.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("controller: Run called twice")
	}
	info, err := kafka.EnsureTopic(ctx, s.cfg.Brokers, s.cfg.Topic, s.cfg.Partitions, s.extra...)
	if err != nil {
		s.ln.Close()
		return err
	}
	// Set before the gRPC server serves and the fetch loop runs; read-only after.
	s.streamID = info.ID
	if s.streamID == "" {
		s.streamID = "topic:" + s.cfg.Topic
	}
	s.numParts.Store(info.Partitions)
	s.publishOwnership()

	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ClientID("herald-controller"),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onRevoked),
	}
	if st := s.cfg.SessionTimeout; st > 0 {
		opts = append(opts, kgo.SessionTimeout(st), kgo.HeartbeatInterval(min(st/5, 3*time.Second)))
	}
	// The fetcher exists before the client: the group's callbacks, which may
	// run as soon as the client does, tell it about assignments.
	s.fetch = newFetcher(s)
	cl, err := kgo.NewClient(append(opts, s.extra...)...)
	if err != nil {
		s.ln.Close()
		return fmt.Errorf("creating kafka client: %w", err)
	}
	// kgo keeps the group; the fetch loops fetch (fetch.go). Paused here,
	// round trips before the group can be joined and a partition assigned,
	// so kgo never fetches the topic itself.
	cl.PauseFetchTopics(s.cfg.Topic)
	s.fetch.cl = cl // read by the fetch loops, started below
	s.cl.Store(cl)

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.grpc.Serve(s.ln) }()

	pollCtx, stopPoll := context.WithCancel(context.Background())
	go s.sw.run() // before any partition is assigned (they register with it)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		s.fetch.run(pollCtx)
	}()
	janitorDone := make(chan struct{})
	go func() {
		defer close(janitorDone)
		s.ringJanitor(pollCtx)
	}()
	presenceDone := make(chan struct{})
	go func() {
		defer close(presenceDone)
		s.presence.run(pollCtx)
	}()
	s.log.Info("controller running", "id", s.cfg.ID, "addr", s.Addr(), "topic", s.cfg.Topic, "partitions", info.Partitions, "stream", s.streamID, "group", s.cfg.Group)

	var runErr error
	served := false
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		served = true
		runErr = fmt.Errorf("serving gRPC: %w", err)
	}

	// Shutdown: relays first (they reconnect elsewhere), then consumption,
	// then persistence, then the group.
	s.closing.Store(true)
	s.closeStreams(status.Error(codes.Unavailable, "controller shutting down"))
	s.stopGRPC()
	if !served {
		<-serveErr
	}
	stopPoll()
	<-pollDone
	<-janitorDone
	<-presenceDone
	s.dropParts(s.ownedParts(), !s.crashOnStop)
	leaveCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	if err := cl.LeaveGroupContext(leaveCtx); err != nil {
		s.log.Warn("leaving consumer group", "err", err)
	}
	cancel()
	cl.Close()
	s.dropParts(s.ownedParts(), !s.crashOnStop) // assigned during shutdown
	s.sw.stop()
	s.recvWG.Wait()
	s.log.Info("controller stopped", "id", s.cfg.ID)
	return runErr
}

func (s *Server) stopGRPC() {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("gRPC graceful stop timed out, stopping", "timeout", s.cfg.ShutdownTimeout)
		s.grpc.Stop()
		<-done
	}
}

// Ready reports whether the controller runs and reaches Kafka and the store.
func (s *Server) Ready(ctx context.Context) error {
	cl := s.cl.Load()
	if cl == nil || s.closing.Load() {
		return errors.New("controller not running")
	}
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("pinging kafka: %w", err)
	}
	if err := s.store.Ping(ctx); err != nil {
		return fmt.Errorf("pinging store: %w", err)
	}
	return nil
}

// publishOwnership stores the current ownership and tells every relay.
func (s *Server) publishOwnership() {
	owned := s.ownedParts()
	slices.Sort(owned)
	s.ownership.Store(&heraldv1.Ownership{
		ControllerId:   s.cfg.ID,
		PartitionCount: s.numParts.Load(),
		Partitions:     owned,
	})
	s.m.ownedPartitions.Set(float64(len(owned)))
	s.wakeStreams()
	if s.fetch != nil {
		s.fetch.notify() // fetch loops pick up assigned partitions, drop revoked ones
	}
}

// Ownership returns the partitions this controller owns right now (what it
// announces to relays).
func (s *Server) Ownership() *heraldv1.Ownership { return s.ownership.Load() }

func (s *Server) pauseFetch(p int32) {
	if s.fetch != nil {
		s.fetch.pause(p)
	}
}

func (s *Server) resumeFetch(p int32) {
	if s.fetch != nil {
		s.fetch.resume(p)
	}
}

// EnsureTopic creates topic with the given partition count if it does not
// exist. An existing topic with another partition count is an error: the
// count is fixed at creation (channels map to partitions by it).
func EnsureTopic(ctx context.Context, brokers []string, topic string, partitions int32) error {
	_, err := kafka.EnsureTopic(ctx, brokers, topic, partitions)
	return err
}
