// Package cacher is Herald's caching engine: it moves full chunks of old
// messages from the store to the S3 archive, verifies them, records the
// channel's archived-through seq and only then purges them from the store
// (invariant I5: nothing leaves the store before its chunk is in S3 and
// verified).
//
// A run walks every channel (or one, when asked) and, for each full chunk n
// (seqs n·K+1 … (n+1)·K) above the channel's archived-through seq whose
// newest message is older than MinAge: reads the K messages (exactly K dense
// seqs, else the chunk is skipped and reported), writes the chunk unless a
// valid object with the same messages exists, reads it back and checks
// count and checksum, calls SetArchivedThrough((n+1)·K) and then
// Purge((n+1)·K). Every step is idempotent, so a run after a crash at any
// step converges: an existing valid chunk is reused, a corrupt one is
// rewritten, and messages left at or below archived-through by a crash
// between SetArchivedThrough and Purge are purged by the next run.
//
// Runs happen on an interval and on POST /v1/archive/run; one run at a time
// across all cacher instances sharing a store. Within a process, a trigger
// while a run is in progress returns the running run's id. Across
// processes, a run first takes the store lease "cacher.archive-run"
// (store.AcquireLease, TTL LeaseTTL) and renews it every LeaseTTL/3 while
// it works; the lease is released when the run ends. A trigger while
// another instance holds the lease does not queue: POST answers 409 with
// the holder's instance id and the lease expiry, and a periodic run is
// skipped (the holder is already doing the work; the next tick retries).
// A run that cannot renew its lease (another instance took it after it
// expired, or the store was unreachable until it expired) stops at once
// and reports it. Safety does not depend on the lease: chunks are
// deterministic and every step is idempotent, so two overlapping runs (as
// can briefly happen on FerretDB, see store.Store.AcquireLease) converge
// too; the lease only keeps instances from doing the same work twice.
//
// Concurrency: Server methods are safe for concurrent use. Runs execute on
// goroutines owned by the Server; Run waits for them on shutdown.
package cacher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-chat/herald/internal/archive"
	"github.com/herald-chat/herald/internal/store"
)

// Run statuses.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// maxRuns is how many finished runs are remembered for GET.
const maxRuns = 100

// maxReported bounds the skipped/error lists of one run.
const maxReported = 20

// RunStatus reports one archive run.
type RunStatus struct {
	ID              string     `json:"run_id"`
	Status          string     `json:"status"`
	Channel         string     `json:"channel,omitempty"`
	StartedAt       time.Time  `json:"started_at"`
	FinishedAt      *time.Time `json:"finished_at,omitempty"`
	ChannelsScanned int        `json:"channels_scanned"`
	ChunksArchived  int        `json:"chunks_archived"`
	ChunksReused    int        `json:"chunks_reused"`
	BytesArchived   int64      `json:"bytes_archived"`
	MessagesPurged  int64      `json:"messages_purged"`
	ChunksSkipped   int        `json:"chunks_skipped"`
	Skipped         []string   `json:"skipped,omitempty"`
	Errors          []string   `json:"errors,omitempty"`
	Error           string     `json:"error,omitempty"`
}

// Server is the cacher service.
type Server struct {
	cfg Config
	st  store.Store
	arc *archive.Client
	log *slog.Logger
	m   *metrics
	k   uint64
	now func() time.Time
	// hook, when set by tests, is called after each step of archiving a
	// chunk ("written", "verified", "archived") and before its purge
	// ("purge"); a non-nil error aborts the run there, as a crash would.
	hook func(ctx context.Context, step, channel string, n uint64) error

	startMu sync.Mutex // serializes starting runs (lease + current)

	ctx    context.Context // parent of runs; cancelled by Run on shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup // runs in progress

	mu      sync.Mutex
	current *RunStatus // the run in progress, guarded by mu
	runs    map[string]*RunStatus
	order   []string // run ids, oldest first
}

// New returns a cacher over st and arc. cfg.ChunkSize must be 0 or equal to
// arc.ChunkSize().
func New(cfg Config, st store.Store, arc *archive.Client, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8081"
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Minute
	}
	if cfg.ChannelPage <= 0 {
		cfg.ChannelPage = 500
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = time.Minute
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		cfg.Instance = host + "/" + cfg.Addr + "/" + hex.EncodeToString(b[:])
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil || arc == nil {
		return nil, errors.New("cacher: store and archive client are required")
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = arc.ChunkSize()
	}
	if cfg.ChunkSize != arc.ChunkSize() {
		return nil, fmt.Errorf("cacher: chunk size %d differs from the archive client's chunk size %d (-archive-chunk-size, HERALD_ARCHIVE_CHUNK_SIZE)", cfg.ChunkSize, arc.ChunkSize())
	}
	if log == nil {
		log = slog.Default()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, st: st, arc: arc, log: log.With("service", "cacher"), m: m,
		k: uint64(cfg.ChunkSize), now: time.Now,
		ctx: ctx, cancel: cancel,
		runs: map[string]*RunStatus{},
	}, nil
}

// Run serves the HTTP API and runs the archiver every Interval (starting
// now) until ctx is cancelled; then it stops the HTTP server, cancels a run
// in progress (safe: every step is idempotent), waits for it and returns nil.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		s.cancel()
		return fmt.Errorf("cacher: listening on %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("cacher listening", "addr", ln.Addr().String(), "chunk_size", s.k, "min_age", s.cfg.MinAge, "interval", s.cfg.Interval,
		"instance", s.cfg.Instance, "lease_ttl", s.cfg.LeaseTTL)

	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	s.periodic()
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			s.periodic()
		case serveErr = <-errc:
			break loop
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	s.cancel()
	s.wg.Wait()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("cacher: serving HTTP: %w", serveErr)
	}
	return nil
}

// Ready reports whether the store and the archive are reachable.
func (s *Server) Ready(ctx context.Context) error {
	if err := s.st.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := s.arc.Ping(ctx); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

// HeldElsewhereError reports that another cacher instance holds the run
// lease.
type HeldElsewhereError struct {
	Lease store.Lease
}

func (e *HeldElsewhereError) Error() string {
	return fmt.Sprintf("an archive run is in progress on cacher instance %q (lease until %s)", e.Lease.Owner, e.Lease.Expires.Format(time.RFC3339Nano))
}

// ErrShuttingDown is returned by Trigger once Run is shutting down.
var ErrShuttingDown = errors.New("cacher: shutting down")

// periodic starts an interval run unless one runs here or elsewhere.
func (s *Server) periodic() {
	_, _, err := s.Trigger("")
	var held *HeldElsewhereError
	switch {
	case errors.As(err, &held):
		s.log.Info("archive run skipped: another instance holds the run lease", "holder", held.Lease.Owner, "until", held.Lease.Expires)
	case errors.Is(err, ErrShuttingDown):
	case err != nil:
		s.log.Error("archive run not started", "error", err)
	}
}

// Trigger starts a run over channel ("" = every channel) in the background
// and returns its id. When a run is already in progress in this process it
// returns that run's id and started=false. When another instance holds the
// run lease it returns a *HeldElsewhereError; a store error while taking
// the lease is returned as is (nothing started).
func (s *Server) Trigger(channel string) (id string, started bool, err error) {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if id := s.currentID(); id != "" {
		return id, false, nil
	}
	if s.ctx.Err() != nil {
		return "", false, ErrShuttingDown
	}
	lease, err := s.acquire(s.ctx)
	if err != nil {
		return "", false, err
	}
	s.mu.Lock()
	r := s.newRunLocked(channel)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.execute(s.ctx, r, lease)
	}()
	return r.ID, true, nil
}

// RunOnce runs synchronously over channel ("" = every channel) and returns
// the final status. If a run is in progress in this process it waits for it
// first; if another instance holds the run lease it returns a
// *HeldElsewhereError without waiting.
func (s *Server) RunOnce(ctx context.Context, channel string) (RunStatus, error) {
	for {
		s.startMu.Lock()
		if id := s.currentID(); id != "" {
			s.startMu.Unlock()
			if err := s.wait(ctx, id); err != nil {
				return RunStatus{}, err
			}
			continue
		}
		lease, err := s.acquire(ctx)
		if err != nil {
			s.startMu.Unlock()
			return RunStatus{}, err
		}
		s.mu.Lock()
		r := s.newRunLocked(channel)
		s.mu.Unlock()
		s.startMu.Unlock()
		s.execute(ctx, r, lease)
		st, _ := s.Status(r.ID)
		return st, nil
	}
}

func (s *Server) currentID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return ""
	}
	return s.current.ID
}

// acquire takes the run lease for this instance.
func (s *Server) acquire(ctx context.Context) (store.Lease, error) {
	l, ok, err := s.st.AcquireLease(ctx, LeaseName, s.cfg.Instance, s.cfg.LeaseTTL)
	if err != nil {
		return store.Lease{}, fmt.Errorf("taking the run lease: %w", err)
	}
	if !ok {
		return store.Lease{}, &HeldElsewhereError{Lease: l}
	}
	return l, nil
}

// errLeaseLost is the cause of a run's cancellation when its lease could
// not be renewed.
var errLeaseLost = errors.New("lost the run lease")

// keepLease renews the lease every LeaseTTL/3 until ctx ends; when the
// lease is taken by another instance, or cannot be renewed before it
// expires, it cancels the run with errLeaseLost.
func (s *Server) keepLease(ctx context.Context, cancel context.CancelCauseFunc, lease store.Lease) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l, ok, err := s.st.AcquireLease(ctx, LeaseName, s.cfg.Instance, s.cfg.LeaseTTL)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && ok:
			lease = l
			continue
		case err == nil:
			s.log.Error("archive run lease taken by another instance; stopping the run", "holder", l.Owner)
			cancel(fmt.Errorf("%w: instance %q holds it", errLeaseLost, l.Owner))
			return
		}
		// Store trouble: keep trying while the lease is still ours.
		if time.Until(lease.Expires) < s.cfg.LeaseTTL/6 {
			s.log.Error("archive run lease could not be renewed before expiry; stopping the run", "error", err)
			cancel(fmt.Errorf("%w: renewing: %v", errLeaseLost, err))
			return
		}
		s.log.Warn("renewing archive run lease failed; retrying", "error", err)
	}
}

func (s *Server) wait(ctx context.Context, id string) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if st, ok := s.Status(id); !ok || st.Status != StatusRunning {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Status returns a copy of the status of run id.
func (s *Server) Status(id string) (RunStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[id]
	if !ok {
		return RunStatus{}, false
	}
	c := *r
	c.Skipped = append([]string(nil), r.Skipped...)
	c.Errors = append([]string(nil), r.Errors...)
	return c, true
}

// newRunLocked registers a new running run; s.mu must be held.
func (s *Server) newRunLocked(channel string) *RunStatus {
	var b [8]byte
	_, _ = rand.Read(b[:])
	r := &RunStatus{
		ID:        s.now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:]),
		Status:    StatusRunning,
		Channel:   channel,
		StartedAt: s.now().UTC(),
	}
	s.current = r
	s.runs[r.ID] = r
	s.order = append(s.order, r.ID)
	for len(s.order) > maxRuns {
		delete(s.runs, s.order[0])
		s.order = s.order[1:]
	}
	return r
}

// update applies f to r under s.mu.
func (s *Server) update(r *RunStatus, f func(r *RunStatus)) {
	s.mu.Lock()
	f(r)
	s.mu.Unlock()
}

// execute performs run r holding lease, renewing it meanwhile, and
// releases the lease when done.
func (s *Server) execute(ctx context.Context, r *RunStatus, lease store.Lease) {
	s.m.runningGauge.Set(1)
	start := time.Now()
	s.log.Info("archive run started", "run_id", r.ID, "channel", r.Channel, "instance", s.cfg.Instance)
	runCtx, cancel := context.WithCancelCause(ctx)
	var keeper sync.WaitGroup
	keeper.Add(1)
	go func() {
		defer keeper.Done()
		s.keepLease(runCtx, cancel, lease)
	}()
	err := s.archiveAll(runCtx, r)
	if cause := context.Cause(runCtx); err != nil && errors.Is(cause, errLeaseLost) {
		err = cause
	}
	cancel(nil)
	keeper.Wait()
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	if rerr := s.st.ReleaseLease(rctx, LeaseName, s.cfg.Instance); rerr != nil {
		s.log.Warn("releasing archive run lease failed; it lapses at its expiry", "error", rerr)
	}
	rcancel()
	s.m.runDuration.Observe(time.Since(start).Seconds())
	s.m.runningGauge.Set(0)

	s.mu.Lock()
	fin := s.now().UTC()
	r.FinishedAt = &fin
	if err == nil && len(r.Errors) > 0 {
		err = errors.New(r.Errors[0])
		if len(r.Errors) > 1 {
			err = fmt.Errorf("%s (and %d more errors)", r.Errors[0], len(r.Errors)-1)
		}
	}
	if err != nil {
		r.Status, r.Error = StatusFailed, err.Error()
	} else {
		r.Status = StatusSucceeded
	}
	s.current = nil
	done := *r
	s.mu.Unlock()

	s.m.runs.WithLabelValues(done.Status).Inc()
	if err == nil {
		s.m.lastSuccess.Set(float64(fin.UnixNano()) / 1e9)
	}
	lvl := slog.LevelInfo
	if err != nil {
		lvl = slog.LevelError
	}
	s.log.Log(context.Background(), lvl, "archive run finished", "run_id", done.ID, "status", done.Status,
		"channels", done.ChannelsScanned, "chunks_archived", done.ChunksArchived, "chunks_reused", done.ChunksReused,
		"bytes", done.BytesArchived, "purged", done.MessagesPurged, "skipped", done.ChunksSkipped,
		"duration", time.Since(start), "error", done.Error)
}

// fatal reports whether err must abort the whole run (a backend is down or
// the run is cancelled) rather than just the channel.
func fatal(ctx context.Context, err error) bool {
	return ctx.Err() != nil || archive.IsUnavailable(err) || errors.Is(err, store.ErrUnavailable)
}

func (s *Server) archiveAll(ctx context.Context, r *RunStatus) error {
	if r.Channel != "" {
		ch, err := s.st.Channel(ctx, r.Channel)
		if store.IsNotFound(err) {
			return fmt.Errorf("channel %q: not found", r.Channel)
		}
		if err != nil {
			return fmt.Errorf("reading channel %q: %w", r.Channel, err)
		}
		return s.archiveChannel(ctx, r, ch)
	}
	after := ""
	for {
		chs, err := s.st.Channels(ctx, after, s.cfg.ChannelPage)
		if err != nil {
			return fmt.Errorf("listing channels after %q: %w", after, err)
		}
		for _, ch := range chs {
			if err := s.archiveChannel(ctx, r, ch); err != nil {
				if fatal(ctx, err) {
					return err
				}
				s.update(r, func(r *RunStatus) {
					if len(r.Errors) < maxReported {
						r.Errors = append(r.Errors, err.Error())
					}
				})
			}
		}
		if len(chs) < s.cfg.ChannelPage {
			return nil
		}
		after = chs[len(chs)-1].Name
	}
}

// archiveChannel archives every eligible chunk of ch, in order, stopping at
// the first chunk that is too new, incomplete or fails.
func (s *Server) archiveChannel(ctx context.Context, r *RunStatus, ch store.Channel) error {
	s.update(r, func(r *RunStatus) { r.ChannelsScanned++ })
	k := s.k
	// Converge after a crash between SetArchivedThrough and Purge.
	if ch.ArchivedThrough > 0 {
		if err := s.purge(ctx, r, ch.Name, ch.ArchivedThrough); err != nil {
			return err
		}
	}
	for n := ch.ArchivedThrough / k; (n+1)*k <= ch.LastSeq; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		first, last := n*k+1, (n+1)*k
		newest, err := s.st.Messages(ctx, store.Range{Channel: ch.Name, From: last, To: last})
		if err != nil {
			return fmt.Errorf("reading seq %d of %q: %w", last, ch.Name, err)
		}
		if len(newest) == 1 && s.now().Sub(newest[0].PublishedAt) < s.cfg.MinAge {
			return nil // this chunk and every later one are too new
		}
		msgs, err := s.st.Messages(ctx, store.Range{Channel: ch.Name, From: first, To: last})
		if err != nil {
			return fmt.Errorf("reading chunk %d of %q: %w", n, ch.Name, err)
		}
		if reason := notDense(msgs, first, last); reason != "" {
			s.m.skipped.Inc()
			s.log.Error("archive: chunk skipped: store does not hold exactly K dense seqs", "channel", ch.Name, "chunk", n, "reason", reason)
			s.update(r, func(r *RunStatus) {
				r.ChunksSkipped++
				if len(r.Skipped) < maxReported {
					r.Skipped = append(r.Skipped, fmt.Sprintf("channel %q chunk %d (seqs %d-%d): %s", ch.Name, n, first, last, reason))
				}
			})
			return nil // later chunks cannot be archived past a gap
		}
		if s.now().Sub(msgs[len(msgs)-1].PublishedAt) < s.cfg.MinAge {
			return nil
		}
		info, reused, err := s.putVerified(ctx, ch.Name, n, msgs)
		if err != nil {
			return err
		}
		if err := s.step(ctx, "verified", ch.Name, n); err != nil {
			return err
		}
		if err := s.st.SetArchivedThrough(ctx, ch.Name, last); err != nil {
			return fmt.Errorf("setting archived-through of %q to %d: %w", ch.Name, last, err)
		}
		if err := s.step(ctx, "archived", ch.Name, n); err != nil {
			return err
		}
		s.m.chunks.Inc()
		if !reused {
			s.m.bytes.Add(float64(info.Size))
		}
		s.update(r, func(r *RunStatus) {
			r.ChunksArchived++
			if reused {
				r.ChunksReused++
			} else {
				r.BytesArchived += info.Size
			}
		})
		if err := s.step(ctx, "purge", ch.Name, n); err != nil {
			return err
		}
		if err := s.purge(ctx, r, ch.Name, last); err != nil {
			return err
		}
	}
	return nil
}

// step calls the test hook, if any.
func (s *Server) step(ctx context.Context, name, channel string, n uint64) error {
	if s.hook == nil {
		return nil
	}
	return s.hook(ctx, name, channel, n)
}

func (s *Server) purge(ctx context.Context, r *RunStatus, channel string, through uint64) error {
	n, err := s.st.Purge(ctx, channel, through)
	if err != nil {
		return fmt.Errorf("purging %q through %d: %w", channel, through, err)
	}
	if n > 0 {
		s.m.purged.Add(float64(n))
		s.update(r, func(r *RunStatus) { r.MessagesPurged += n })
	}
	return nil
}

// notDense explains why msgs are not exactly the seqs first…last, or "".
func notDense(msgs []store.Message, first, last uint64) string {
	if want := last - first + 1; uint64(len(msgs)) != want {
		return fmt.Sprintf("store returned %d messages, want %d", len(msgs), want)
	}
	for i, m := range msgs {
		if m.Seq != first+uint64(i) {
			return fmt.Sprintf("seq %d where %d was expected", m.Seq, first+uint64(i))
		}
	}
	return ""
}

// putVerified makes chunk n of channel exist in S3 with msgs' content and
// verified. A valid existing chunk holding the same messages is reused; a
// corrupt one is rewritten; a valid one holding other messages is an error
// (chunks are immutable, so that needs a human).
func (s *Server) putVerified(ctx context.Context, channel string, n uint64, msgs []store.Message) (archive.ChunkInfo, bool, error) {
	_, err := s.arc.StatChunk(ctx, channel, n)
	switch {
	case err == nil:
		existing, gerr := s.arc.GetChunk(ctx, channel, n)
		switch {
		case gerr == nil:
			if !sameMessages(existing, msgs) {
				s.m.verifyFail.Inc()
				return archive.ChunkInfo{}, false, fmt.Errorf("chunk %d of %q: the archived chunk holds other messages than the store; refusing to overwrite or purge", n, channel)
			}
			info, serr := s.arc.StatChunk(ctx, channel, n)
			return info, true, serr
		case archive.IsCorrupt(gerr):
			s.log.Warn("archive: rewriting corrupt chunk", "channel", channel, "chunk", n, "error", gerr)
		default:
			return archive.ChunkInfo{}, false, gerr
		}
	case archive.IsNotFound(err):
	default:
		return archive.ChunkInfo{}, false, err
	}
	info, err := s.arc.PutChunk(ctx, channel, n, msgs)
	if err != nil {
		return archive.ChunkInfo{}, false, err
	}
	if err := s.step(ctx, "written", channel, n); err != nil {
		return archive.ChunkInfo{}, false, err
	}
	if _, err := s.arc.VerifyChunk(ctx, channel, n, len(msgs), info.Checksum); err != nil {
		if !archive.IsUnavailable(err) {
			s.m.verifyFail.Inc()
		}
		return archive.ChunkInfo{}, false, fmt.Errorf("verifying chunk %d of %q: %w", n, channel, err)
	}
	return info, false, nil
}

func sameMessages(a, b []store.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Seq != b[i].Seq || a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}
