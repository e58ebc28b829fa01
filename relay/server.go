package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/herald-chat/herald/internal/admin"
	"github.com/herald-chat/herald/internal/auth"
	"github.com/herald-chat/herald/internal/channelopt"
	"github.com/herald-chat/herald/internal/kafka"
	"github.com/herald-chat/herald/internal/tick"
	"github.com/herald-chat/herald/internal/uuid"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// Version is reported to clients in the connect reply.
const Version = "herald"

const wsPath = "/connection/websocket"

// Server is one relay: gnet event loops holding the client connections, a
// router of channels to local subscribers, one stream per controller and a
// Kafka producer.
type Server struct {
	gnet.BuiltinEventEngine

	cfg       Config
	startedAt time.Time // New's time (the server API's info uptime)
	verifier  *auth.Verifier
	log       *slog.Logger
	m         *metrics

	numLoops int
	// loopsMu guards loops and loopByEL (filled as gnet boots the loops); a leaf.
	loopsMu  sync.RWMutex
	loops    []*loop
	loopByEL map[gnet.EventLoop]*loop

	router   *router
	links    *links
	pres     *presenceTable
	chopts   *channelopt.Namespaces
	interned *internTable
	// yields takes loops whose drain round stopped at deliverBudget; the
	// yielder schedules them again (see loop.drain).
	yields chan *loop
	kcl    *kgo.Client
	gate   *produceGate[*produceBuf] // paces kcl's produce requests (produce.go)
	pool   *pool

	// bg lives until Run returns; off-loop work (router workers, recovery,
	// history) uses it.
	bg       context.Context
	bgCancel context.CancelFunc

	eng      gnet.Engine
	booted   chan struct{}
	addr     atomic.Value // string, bound address
	stopping atomic.Bool
	// publishing counts publishes waiting for Kafka across all loops, so
	// shutdown can let them be answered before the loops stop.
	publishing atomic.Int64
	open       atomic.Int64 // open connections
	// maxConns is the connection limit (Config.ConnLimit); refusedLog is
	// when the last refusal was logged (unix ns), once per 10 s at most.
	maxConns   int64
	refusedLog atomic.Int64
}

// New builds a relay. kgoOpts are appended to the producer options (seed
// brokers from cfg, manual partitioning, acks=all, idempotent writes), so
// tests and `herald dev` can point it at an embedded Kafka.
func New(cfg Config, verifier *auth.Verifier, log *slog.Logger, reg prometheus.Registerer, kgoOpts ...kgo.Opt) (*Server, error) {
	if verifier == nil {
		return nil, errors.New("relay: nil token verifier")
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.RelayID == "" {
		host, _ := os.Hostname()
		cfg.RelayID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), newUUID()[:8])
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("relay config: %w", err)
	}
	n := cfg.Loops()
	s := &Server{
		cfg:       cfg,
		startedAt: time.Now(),
		verifier:  verifier,
		log:       log.With("service", "relay"),
		m:         newMetrics(reg),
		numLoops:  n,
		loops:     make([]*loop, n),
		loopByEL:  map[gnet.EventLoop]*loop{},
		booted:    make(chan struct{}),
	}
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		nofile.Cur = 1 << 20 // unknown: MaxConnections, if set, decides
	}
	s.maxConns = int64(cfg.ConnLimit(nofile.Cur))
	if cfg.MaxConnections > 0 && int64(cfg.MaxConnections) > s.maxConns {
		s.log.Warn("max connections lowered below the open-file limit (accepting with a full file table would stop the relay)",
			"configured", cfg.MaxConnections, "open_file_limit", nofile.Cur, "max_connections", s.maxConns)
	}
	s.bg, s.bgCancel = context.WithCancel(context.Background())
	var err error
	s.router = newRouter(s)
	s.pres = newPresenceTable()
	if s.chopts, err = channelopt.Parse(cfg.ChannelNamespaces); err != nil {
		return nil, err
	}
	s.interned = newInternTable()
	s.yields = make(chan *loop, n)
	if s.links, err = newLinks(s, cfg.Controllers); err != nil {
		return nil, err
	}
	opts := append(kafka.ProducerOpts(cfg.Brokers, cfg.Topic, cfg.PublishTimeout), kgo.MaxBufferedRecords(100_000))
	if s.kcl, err = kgo.NewClient(append(opts, kgoOpts...)...); err != nil {
		s.links.close()
		return nil, fmt.Errorf("creating Kafka client: %w", err)
	}
	s.gate = newProduceGate(cfg.ProduceWindow, s.produce, func(n int) { s.m.produceBatch.Observe(float64(n)) })
	s.pool = newPool(cfg.Workers, cfg.WorkerQueue)
	return s, nil
}

// Addr returns the bound WebSocket address once Run has started listening.
func (s *Server) Addr() string {
	if v, ok := s.addr.Load().(string); ok {
		return v
	}
	return ""
}

// Ready reports nil when the listener is up, at least one controller stream
// is open and Kafka answers.
func (s *Server) Ready(ctx context.Context) error {
	select {
	case <-s.booted:
	default:
		return errors.New("relay: not listening yet")
	}
	if s.stopping.Load() {
		return errors.New("relay: shutting down")
	}
	if s.links.up() == 0 {
		return errors.New("relay: no controller stream open")
	}
	if err := s.kcl.Ping(ctx); err != nil {
		return fmt.Errorf("relay: pinging Kafka: %w", err)
	}
	return nil
}

// Run serves until ctx is cancelled, then drains: new connections are
// refused (and Ready fails), clients are disconnected with 3001 shutdown
// spread over DrainWindow while the controller streams and the producer keep
// serving the rest, then the streams close, the producer is flushed and Run
// returns nil. It returns an error when the listener cannot be bound.
func (s *Server) Run(ctx context.Context) error {
	bg, cancel := s.bg, s.bgCancel
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		s.pool.close()
		s.links.close()
		s.kcl.Close()
	}()

	runErr := make(chan error, 1)
	go func() {
		runErr <- gnet.Run(s, "tcp://"+s.cfg.Addr,
			gnet.WithMulticore(s.numLoops > 1),
			gnet.WithNumEventLoop(s.numLoops),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(gnetLogger{s.log}),
		)
	}()
	select {
	case err := <-runErr:
		return fmt.Errorf("relay: listening on %s: %w", s.cfg.Addr, err)
	case <-s.booted:
	}
	s.log.Info("relay listening", "addr", s.Addr(), "loops", s.numLoops, "controllers", len(s.links.links))

	for i := 0; i < s.cfg.RouterWorkers; i++ {
		wg.Go(func() { s.router.worker(bg) })
	}
	wg.Go(func() { s.router.janitor(bg) })
	wg.Go(func() { s.ticker(bg) })
	wg.Go(func() { s.links.watch(bg) })
	wg.Go(func() { s.yielder(bg) })
	if s.cfg.PprofAddr != "" {
		if _, err := admin.ServePprof(bg, s.cfg.PprofAddr, s.log); err != nil {
			s.log.Warn("pprof not served", "err", err)
		}
	}
	for _, l := range s.links.links {
		wg.Go(func() { s.links.run(bg, l) })
	}

	select {
	case err := <-runErr:
		return fmt.Errorf("relay: event loops stopped: %w", err)
	case <-ctx.Done():
	}
	s.drain()
	s.shutdown()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := s.eng.Stop(sctx); err != nil {
		s.log.Warn("stopping event loops", "err", err)
	}
	<-runErr
	cancel()
	wg.Wait()
	fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer fcancel()
	s.gate.flush()
	if err := s.kcl.Flush(fctx); err != nil {
		s.log.Warn("flushing producer", "err", err)
	}
	s.log.Info("relay stopped")
	return nil
}

// drain refuses new connections and disconnects the open ones with 3001,
// a share of every loop's connections per step, spread over DrainWindow, so
// that clients reconnect elsewhere gradually. It returns early once no
// connection is left.
func (s *Server) drain() {
	s.stopping.Store(true)
	window := s.cfg.DrainWindow
	n := s.open.Load()
	if window <= 0 || n == 0 {
		return
	}
	const stepEvery = 100 * time.Millisecond
	steps := max(int(window/stepEvery), 1)
	s.log.Info("draining connections", "connections", n, "window", window)
	t := time.NewTicker(window / time.Duration(steps))
	defer t.Stop()
	for i := 1; i <= steps; i++ {
		frac := float64(i) / float64(steps)
		for _, l := range s.allLoops() {
			l.execute(func() { l.drainStep(frac) })
		}
		if i == steps {
			break
		}
		<-t.C
		if s.open.Load() == 0 {
			return
		}
	}
}

// shutdown disconnects every remaining client with 3001 and waits briefly
// for the close frames to be written.
func (s *Server) shutdown() {
	s.stopping.Store(true)
	var wg sync.WaitGroup
	for _, l := range s.allLoops() {
		wg.Add(1)
		l.execute(func() {
			defer wg.Done()
			for cl := range l.allConns {
				if cl.state == stateHTTP {
					cl.state = stateClosing
					_ = cl.c.Close()
					continue
				}
				cl.leave()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	// Clients with publishes in flight leave once Kafka answered them; every
	// publish is answered within PublishTimeout (loop.expirePublishes).
	deadline := time.Now().Add(s.cfg.PublishTimeout + time.Second)
	for s.publishing.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) allLoops() []*loop {
	s.loopsMu.RLock()
	defer s.loopsMu.RUnlock()
	out := make([]*loop, 0, len(s.loops))
	for _, l := range s.loops {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

func (s *Server) loopAt(i int) *loop {
	s.loopsMu.RLock()
	defer s.loopsMu.RUnlock()
	return s.loops[i]
}

// loopOf returns the relay state of gnet loop el, creating it on first use.
func (s *Server) loopOf(el gnet.EventLoop) *loop {
	s.loopsMu.RLock()
	l := s.loopByEL[el]
	s.loopsMu.RUnlock()
	if l != nil {
		return l
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if l = s.loopByEL[el]; l != nil {
		return l
	}
	idx := len(s.loopByEL)
	if idx >= s.numLoops {
		panic("relay: more gnet event loops than configured")
	}
	l = newLoop(idx, el, s)
	s.loopByEL[el] = l
	s.loops[idx] = l
	return l
}

// yield asks the yielder to schedule l's drain again, so that the loop
// polls its connections first. It reports false when it cannot (no
// yielder, as in tests): the drain then goes on at once.
func (s *Server) yield(l *loop) bool {
	if s.yields == nil {
		return false
	}
	select {
	case s.yields <- l:
		return true
	default:
		return false
	}
}

// yielder schedules the drains of loops that yielded. By the time it runs,
// the loop has usually gone back to polling; gnet then runs the drain
// after the I/O events of that poll.
func (s *Server) yielder(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-s.yields:
			l.schedule()
		}
	}
}

// ticker drives the per-connection timers of every loop.
func (s *Server) ticker(ctx context.Context) {
	tick.Every(ctx, tickInterval(&s.cfg), func(now time.Time) {
		for _, l := range s.allLoops() {
			l.execute(func() { l.tick(now) })
		}
	})
}

// --- gnet.EventHandler -----------------------------------------------------

// OnBoot records the engine and the bound address.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	s.addr.Store(s.cfg.Addr)
	if fd, err := eng.Dup(); err == nil {
		if sa, err := syscall.Getsockname(fd); err == nil {
			if in4, ok := sa.(*syscall.SockaddrInet4); ok {
				s.addr.Store(net.JoinHostPort(net.IP(in4.Addr[:]).String(), fmt.Sprint(in4.Port)))
			} else if in6, ok := sa.(*syscall.SockaddrInet6); ok {
				s.addr.Store(net.JoinHostPort(net.IP(in6.Addr[:]).String(), fmt.Sprint(in6.Port)))
			}
		}
		_ = syscall.Close(fd)
	}
	close(s.booted)
	return gnet.None
}

// respLimit answers a connection over MaxConnections, before its request
// is read: the SDKs back off and retry (through a load balancer, likely on
// another relay).
var respLimit = []byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 32\r\nConnection: close\r\n\r\nrelay at its connection limit.\r\n")

// OnOpen creates the connection state; nothing is allocated but the struct.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if s.stopping.Load() {
		s.m.refused.WithLabelValues("draining").Inc()
		return nil, gnet.Close
	}
	if s.open.Load() >= s.maxConns {
		s.m.refused.WithLabelValues("limit").Inc()
		if now, last := time.Now().UnixNano(), s.refusedLog.Load(); now-last > int64(10*time.Second) && s.refusedLog.CompareAndSwap(last, now) {
			s.log.Warn("connection limit reached: refusing new connections with 503", "max_connections", s.maxConns)
		}
		return respLimit, gnet.Close
	}
	l := s.loopOf(c.EventLoop())
	cl := &client{c: c, l: l, deadline: time.Now().Add(s.cfg.HandshakeTimeout).UnixNano()}
	c.SetContext(cl)
	l.addConn(cl)
	s.open.Add(1)
	s.m.connections.Inc()
	return nil, gnet.None
}

// OnTraffic parses what arrived.
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cl, _ := c.Context().(*client)
	if cl == nil {
		return gnet.Close
	}
	cl.onTraffic()
	return gnet.None
}

// OnClose releases the connection's subscriptions.
func (s *Server) OnClose(c gnet.Conn, _ error) gnet.Action {
	cl, _ := c.Context().(*client)
	if cl == nil || cl.state == stateClosed {
		return gnet.None
	}
	cl.state = stateClosed
	l := cl.l
	l.removeConn(cl)
	for len(cl.subs) > 0 {
		l.removeSub(cl, cl.subs[len(cl.subs)-1])
	}
	cl.clearIOV()
	cl.frag = nil
	cl.connect = nil
	s.open.Add(-1)
	s.m.connections.Dec()
	s.m.disconnects.WithLabelValues(codeLabel(cl.closeCode)).Inc()
	return gnet.None
}

// --- Kafka, history, recovery ----------------------------------------------

// produceBuf is one publish's Kafka record and the message encoded into it,
// recycled once franz-go has called the record's promise (franz-go does not
// touch a record after that): with the value and key buffers they keep, a
// publish allocates neither.
type produceBuf struct {
	rec   kgo.Record
	msg   heraldv1.Message
	start time.Time
	done  func(error)
}

var produceBufs = sync.Pool{New: func() any { return new(produceBuf) }}

// publish produces one message; done runs on a franz-go goroutine after the
// ack (or failure). It never blocks. data is only read during the call.
func (s *Server) publish(ch, sender string, info, data []byte, done func(error)) {
	pb := produceBufs.Get().(*produceBuf)
	pb.msg.Id = kafka.NewMessageID()
	pb.msg.Channel = ch
	pb.msg.Sender = sender
	pb.msg.Info = info
	pb.msg.Data = data
	pb.msg.PublishedAt = time.Now().UnixMilli()
	err := kafka.EncodeRecord(&pb.rec, s.cfg.Topic, int32(s.cfg.Partitions), &pb.msg)
	proto.Reset(&pb.msg) // drop the references to the caller's buffers
	if err != nil {
		produceBufs.Put(pb)
		done(err)
		return
	}
	pb.start, pb.done = time.Now(), done
	s.gate.add(pb)
}

// produce hands one record to franz-go (the produce gate calls it).
func (s *Server) produce(pb *produceBuf) {
	s.kcl.TryProduce(context.Background(), &pb.rec, func(_ *kgo.Record, err error) {
		if err == nil {
			s.m.publishAck.Observe(time.Since(pb.start).Seconds())
		} else {
			s.m.publishErrors.Inc()
			s.log.Warn("publish failed", "err", err)
		}
		done := pb.done
		pb.done = nil
		done(err)
		if cap(pb.rec.Value) <= maxPooledValue {
			produceBufs.Put(pb)
		}
	})
}

// maxPooledValue bounds the value buffer a recycled produceBuf keeps (a
// 64 KiB publish must not pin 64 KiB in the pool).
const maxPooledValue = 4 << 10

// recoverLimitMax bounds the publications one recovery asks the owner for.
const recoverLimitMax = 10_000

// recoverSlack is added to the publications a recovery needs when it asks
// the owner: the owner answers all of since+1..head or nothing (not a
// prefix), and its head moves on while the relay recovers.
const recoverSlack = 1000

// recoverRange fetches the publications of ch with since < seq <= until from
// the owner. ok is false when they are out of reach (epoch changed, trimmed,
// controller unavailable). An empty epoch is unknown, not a different one
// (a channel positioned before its first publication): the owner's epoch
// is taken from its first answer and must then stay the same.
func (s *Server) recoverRange(ctx context.Context, ch string, since uint64, epoch string, until uint64) (pubs []*heraldv1.Publication, ok bool) {
	pubs, _, ok = s.recoverRangeEpoch(ctx, ch, since, epoch, until)
	return pubs, ok
}

// recoverRangeEpoch is recoverRange that also returns the epoch the
// publications belong to (the owner's when epoch was empty).
func (s *Server) recoverRangeEpoch(ctx context.Context, ch string, since uint64, epoch string, until uint64) (out []*heraldv1.Publication, got string, ok bool) {
	next := since
	stalls := 0
	limit := min(until-since+recoverSlack, recoverLimitMax)
	for next < until {
		resp, err := s.links.recoverRetry(ctx, &heraldv1.RecoverRequest{
			Channel: ch, Since: next, Epoch: epoch, Limit: uint32(limit),
		})
		if err != nil {
			return nil, "", false
		}
		if epoch == "" {
			epoch = resp.GetEpoch()
		}
		if resp.GetEpoch() != epoch {
			return nil, "", false
		}
		progressed := false
		for _, p := range resp.GetPublications() {
			if p.GetSeq() == next+1 && next < until {
				out = append(out, p)
				next++
				progressed = true
			}
		}
		if progressed {
			stalls = 0
			continue
		}
		head := resp.GetOffset()
		if !resp.GetRecovered() && head > next && head-next > limit && head-next <= recoverLimitMax {
			// The head ran ahead of what the limit allowed: ask again for
			// all of it (the owner never answers a prefix).
			limit = min(head-next+recoverSlack, recoverLimitMax)
			continue
		}
		// Not recovered although the range is within the limit: purged,
		// or not persisted yet and older than the owner's ring; or the
		// owner has not caught up with what was seen live. Both can be
		// transient: retry a few times before giving up.
		maxStalls := 10
		if !resp.GetRecovered() && head > next {
			maxStalls = 3
		}
		if stalls++; stalls > maxStalls {
			return nil, "", false
		}
		select {
		case <-ctx.Done():
			return nil, "", false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return out, epoch, true
}

// --- worker pool -----------------------------------------------------------

// pool runs blocking jobs (history, recovery) off the event loops with a
// bounded queue.
type pool struct {
	jobs chan func()
	wg   sync.WaitGroup
	once sync.Once
}

func newPool(workers, queue int) *pool {
	p := &pool{jobs: make(chan func(), queue)}
	for i := 0; i < workers; i++ {
		p.wg.Go(func() {
			for job := range p.jobs {
				job()
			}
		})
	}
	return p
}

// trySubmit queues job; false when the queue is full or closed.
func (p *pool) trySubmit(job func()) (ok bool) {
	defer func() {
		if recover() != nil { // closed during shutdown
			ok = false
		}
	}()
	select {
	case p.jobs <- job:
		return true
	default:
		return false
	}
}

func (p *pool) close() {
	p.once.Do(func() { close(p.jobs) })
	p.wg.Wait()
}

// --- ids -------------------------------------------------------------------

// newUUID returns a random (v4) UUID string.
func newUUID() string { return uuid.Format(uuid.NewV4()) }

// newUUIDBytes returns a random (v4) UUID (a client id).
func newUUIDBytes() [16]byte { return uuid.NewV4() }

// formatUUID is a client id's text form.
func formatUUID(b [16]byte) string { return uuid.Format(b) }

// gnetLogger adapts slog to gnet's logger.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) {}
func (g gnetLogger) Infof(format string, args ...any)  { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Fatalf(format string, args ...any) {
	g.l.Error(fmt.Sprintf(format, args...))
	os.Exit(1)
}
