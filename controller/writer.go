package controller

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

// chunk is what the fetch loop hands to a partition's batch writer after one
// fetch: the fetch's messages of that partition, the heads of the channels they
// touched, and the offset to resume from once they are durable (which also
// covers skipped bad records).
type chunk struct {
	msgs  []store.Message
	heads []store.Head
	next  int64
	at    time.Time // when the chunk was handed over
}

// batchWriter is one owned partition's queue of chunks waiting for the
// store. The fetch loops call add; the controller's storeWriter takes due
// batches from every partition's queue and writes them together, retrying
// a failed batch (after a backoff of its own partition) and never dropping
// one. Memory is bounded by pausing the partition's fetching at MaxBacklog
// unpersisted messages.
type batchWriter struct {
	s    *Server
	sw   *storeWriter
	part int32
	log  *slog.Logger

	mu      sync.Mutex
	pending []chunk
	queued  int // messages in pending
	backlog int // messages added and not yet persisted (pending + in flight)
	paused  bool
	// draining: close is waiting for everything to be written (take
	// ignores the interval). drained is closed when the backlog reaches 0
	// while draining. closed: unregistered; late results are ignored.
	draining bool
	drained  chan struct{}
	closed   bool
	// After a failed write: the batch is back at the front of pending and
	// not retried before retryAt; backoff doubles per failure, attempts
	// counts them (both reset by a success).
	retryAt  time.Time
	backoff  time.Duration
	attempts int
}

// newBatchWriter creates partition part's queue and registers it with sw.
func newBatchWriter(s *Server, sw *storeWriter, part int32) *batchWriter {
	w := &batchWriter{s: s, sw: sw, part: part, log: s.log.With("partition", part), drained: make(chan struct{})}
	sw.register(w)
	return w
}

// add queues c. Called by the fetch loop only; never blocks on I/O.
func (w *batchWriter) add(c chunk) {
	n := len(c.msgs)
	w.mu.Lock()
	// The store writer needs telling only when this partition had nothing
	// pending (its flush instant may be earlier than the one the writer
	// sleeps to, or the writer sleeps without a timer) or the batch just
	// became full. Under a steady load neither: the writer already sleeps
	// to the shared flush instant, so a fetch costs no wake-up here.
	first := len(w.pending) == 0
	full := w.queued < w.s.cfg.BatchMessages && w.queued+n >= w.s.cfg.BatchMessages
	w.pending = append(w.pending, c)
	w.queued += n
	w.backlog += n
	pause := !w.paused && w.backlog >= w.s.cfg.MaxBacklog
	if pause {
		w.paused = true
		w.s.pauseFetch(w.part)
	}
	w.mu.Unlock()
	w.s.m.backlog.Add(float64(n))
	if pause {
		w.s.m.pausedPartitions.Inc()
		w.log.Warn("store lags: pausing fetch", "backlog", n)
	}
	switch {
	case full:
		w.sw.kick()
	case first:
		w.sw.due(flushDue(c.at, w.s.cfg.BatchInterval))
	}
}

// persisted accounts for n written messages and resumes fetching once the
// backlog has drained to half of MaxBacklog.
func (w *batchWriter) persisted(n int) {
	w.mu.Lock()
	if w.closed { // close already cleared the accounting
		w.mu.Unlock()
		return
	}
	w.backlog -= n
	retried := w.attempts
	w.retryAt, w.backoff, w.attempts = time.Time{}, 0, 0
	resume := w.paused && w.backlog <= w.s.cfg.MaxBacklog/2
	if resume {
		w.paused = false
		w.s.resumeFetch(w.part)
	}
	if w.draining && w.backlog == 0 {
		close(w.drained)
		w.draining = false
	}
	w.mu.Unlock()
	w.s.m.backlog.Sub(float64(n))
	if retried > 0 {
		w.log.Info("store batch written after retries", "attempts", retried+1)
	}
	if resume {
		w.s.m.pausedPartitions.Dec()
		w.log.Info("store caught up: resuming fetch")
	}
}

// failed puts a batch whose write failed back at the front of pending and
// sets when it may be retried. A closed writer drops it (close counted it
// among the messages it gave up: the next owner replays them from the
// checkpoint).
func (w *batchWriter) failed(batch []chunk, msgs int, err error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.pending = append(batch, w.pending...)
	w.queued += msgs
	w.attempts++
	w.backoff = min(max(2*w.backoff, 50*time.Millisecond), 5*time.Second)
	w.retryAt = time.Now().Add(w.backoff)
	attempt := w.attempts
	w.mu.Unlock()
	w.s.m.storeErrors.Inc()
	if attempt == 1 || attempt%20 == 0 {
		w.log.Error("writing store batch, retrying", "attempt", attempt, "messages", msgs, "err", err)
	}
}

// take removes up to about BatchMessages messages worth of chunks (at least
// one chunk) when a flush is due at now, and reports when to look again
// otherwise (negative: nothing pending). The storeWriter calls it.
func (w *batchWriter) take(now time.Time) (batch []chunk, msgs int, wait time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 {
		return nil, 0, -1
	}
	if wait := w.retryAt.Sub(now); wait > 0 {
		return nil, 0, wait // a failed batch waits out its backoff, draining or not
	}
	if !w.draining && w.queued < w.s.cfg.BatchMessages {
		if wait := flushDue(w.pending[0].at, w.s.cfg.BatchInterval).Sub(now); wait > 0 {
			return nil, 0, wait
		}
	}
	k := 0
	for k < len(w.pending) && (k == 0 || msgs+len(w.pending[k].msgs) <= w.s.cfg.BatchMessages) {
		msgs += len(w.pending[k].msgs)
		k++
	}
	w.queued -= msgs
	batch = make([]chunk, k)
	copy(batch, w.pending[:k])
	clear(w.pending[:k])
	w.pending = w.pending[k:]
	if len(w.pending) == 0 {
		w.pending = nil
	}
	return batch, msgs, 0
}

// flushDue is when a batch whose oldest chunk arrived at oldest is due: the
// first multiple of interval (on the wall clock) after oldest+interval/2, so
// the oldest chunk waits between half and one and a half intervals. Every
// partition of the process (and of every controller) thus flushes at the
// same instants, and the storeWriter writes the partitions' batches of one
// instant together (one transaction on SQLite), where flushing each at its
// own oldest chunk's age spread them over the interval: at 1,000 chat
// msgs/s over 12 partitions that was a transaction (and its WAL pages) per
// message or two.
func flushDue(oldest time.Time, interval time.Duration) time.Time {
	return oldest.Add(interval / 2).Truncate(interval).Add(interval)
}

func (w *batchWriter) unpersisted() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.backlog
}

// close drains the partition's queue, waiting at most timeout (or not at
// all when drain is false), then unregisters it and clears its accounting.
// Called by the partition's owner (revocation or shutdown) once the poll
// loop no longer adds to it. A write of it already running may still land
// (stores are idempotent, heads never move back); its result is ignored.
func (w *batchWriter) close(timeout time.Duration, drain bool) {
	if drain {
		w.mu.Lock()
		wait := w.backlog > 0
		if wait {
			w.draining = true
		}
		w.mu.Unlock()
		if wait {
			w.sw.kick()
			t := time.NewTimer(timeout)
			select {
			case <-w.drained:
			case <-t.C:
				w.log.Warn("flush timed out", "timeout", timeout)
			}
			t.Stop()
		}
	}
	w.sw.unregister(w)
	w.mu.Lock()
	left, paused := w.backlog, w.paused
	w.backlog, w.paused, w.closed = 0, false, true
	w.pending = nil
	w.mu.Unlock()
	if left > 0 {
		w.log.Warn("giving up unpersisted messages; the next owner replays them from the checkpoint", "messages", left)
	}
	w.s.m.backlog.Sub(float64(left))
	if paused {
		w.s.m.pausedPartitions.Dec()
	}
}

// storeWriter is the controller's only store-writing goroutine. At each
// flush instant it takes the due batch of every owned partition and writes
// them with one store call: on a store.BatchesWriter (SQLite: one
// transaction for all of them; MongoDB: three bulk round trips), otherwise
// one WriteBatch per partition, concurrently. One goroutine and one timer
// for all partitions: with a writer goroutine per partition, each woke once
// per interval on its timer and once more when the fetch loop handed it a
// first chunk, and their writes reached SQLite's group commit a few at a
// time (at 1,000 chat msgs/s over 12 partitions, `go tool trace`: ~1,000
// wake-ups and ~230 transactions a second where 50 flush instants would
// do). Partitions are only visited here while registered: close
// unregisters a queue before marking it closed.
type storeWriter struct {
	s *Server

	mu      sync.Mutex
	writers map[*batchWriter]struct{}
	// sleepUntil is when the goroutine looks next (zero: it sleeps with no
	// timer; a time not after now: it is awake or about to look again).
	sleepUntil time.Time
	wake       chan struct{} // capacity 1

	ctx    context.Context // canceled by stop: no more retries
	cancel context.CancelFunc
	done   chan struct{}
}

func newStoreWriter(s *Server) *storeWriter {
	ctx, cancel := context.WithCancel(context.Background())
	return &storeWriter{s: s, writers: map[*batchWriter]struct{}{}, wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (sw *storeWriter) register(w *batchWriter) {
	sw.mu.Lock()
	sw.writers[w] = struct{}{}
	sw.mu.Unlock()
}

func (sw *storeWriter) unregister(w *batchWriter) {
	sw.mu.Lock()
	delete(sw.writers, w)
	sw.mu.Unlock()
}

// kick makes the goroutine look now.
func (sw *storeWriter) kick() {
	select {
	case sw.wake <- struct{}{}:
	default:
	}
}

// due tells the goroutine that a batch falls due at t; it is woken only
// when it would otherwise look later than that.
func (sw *storeWriter) due(t time.Time) {
	sw.mu.Lock()
	later := sw.sleepUntil.IsZero() || sw.sleepUntil.After(t)
	sw.mu.Unlock()
	if later {
		sw.kick()
	}
}

// stop ends the goroutine after the write in progress (give up retries)
// and waits for it. Partitions are closed (drained) before.
func (sw *storeWriter) stop() {
	sw.cancel()
	<-sw.done
}

// taken is one partition's share of a flush.
type taken struct {
	w      *batchWriter
	chunks []chunk
	msgs   int
}

// collect takes the due batches of every partition and, when there are
// none, sets and returns when to look again (negative: nothing pending).
func (sw *storeWriter) collect(now time.Time) ([]taken, time.Duration) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	var round []taken
	next := time.Duration(-1)
	for w := range sw.writers {
		chunks, msgs, wait := w.take(now)
		switch {
		case chunks != nil:
			round = append(round, taken{w: w, chunks: chunks, msgs: msgs})
		case wait >= 0 && (next < 0 || wait < next):
			next = wait
		}
	}
	switch {
	case len(round) > 0:
		sw.sleepUntil = now // awake: it looks again after this round
	case next < 0:
		sw.sleepUntil = time.Time{}
	default:
		sw.sleepUntil = now.Add(next)
	}
	return round, next
}

// run is the goroutine (started by Run, ended by stop).
func (sw *storeWriter) run() {
	defer close(sw.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if sw.ctx.Err() != nil {
			return
		}
		round, next := sw.collect(time.Now())
		if len(round) > 0 {
			sw.write(round)
			continue
		}
		var tc <-chan time.Time
		if next > 0 {
			timer.Reset(next)
			tc = timer.C
		}
		select {
		case <-sw.wake:
		case <-tc:
		case <-sw.ctx.Done():
		}
		timer.Stop()
	}
}

// write stores one flush: each partition's chunks as one batch.
func (sw *storeWriter) write(round []taken) {
	batches := make([]store.Batch, len(round))
	for i, t := range round {
		batches[i] = batchOf(t.w.part, t.chunks)
	}
	start := time.Now()
	var errs []error
	if bw, ok := sw.s.store.(store.BatchesWriter); ok && len(batches) > 1 {
		errs = bw.WriteBatches(sw.ctx, batches)
	} else {
		errs = make([]error, len(batches))
		if len(batches) == 1 {
			errs[0] = sw.s.store.WriteBatch(sw.ctx, batches[0])
		} else {
			var wg sync.WaitGroup
			for i := range batches {
				wg.Go(func() { errs[i] = sw.s.store.WriteBatch(sw.ctx, batches[i]) })
			}
			wg.Wait()
		}
	}
	took, ok := time.Since(start).Seconds(), false
	for i, t := range round {
		if errs[i] == nil {
			ok = true
			sw.s.m.batchSize.Observe(float64(t.msgs))
			t.w.persisted(t.msgs)
			continue
		}
		t.w.failed(t.chunks, t.msgs, errs[i])
	}
	if ok {
		sw.s.m.batchWriteSeconds.Observe(took)
	}
}

// batchOf merges one partition's chunks into one store batch: all their
// messages, each touched channel's newest head, the last checkpoint.
func batchOf(part int32, chunks []chunk) store.Batch {
	b := store.Batch{Partition: part}
	heads := make(map[string]store.Head)
	for _, c := range chunks {
		b.Messages = append(b.Messages, c.msgs...)
		for _, h := range c.heads {
			heads[h.Channel] = h // later chunks are newer
		}
		b.NextOffset = c.next
	}
	b.Heads = make([]store.Head, 0, len(heads))
	for _, h := range heads {
		b.Heads = append(b.Heads, h)
	}
	return b
}
