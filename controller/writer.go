package controller

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

// chunk is what the poll loop hands to a partition's batch writer after one
// poll: the poll's messages of that partition, the heads of the channels they
// touched, and the offset to resume from once they are durable (which also
// covers skipped bad records).
type chunk struct {
	msgs  []store.Message
	heads []store.Head
	next  int64
	at    time.Time // when the chunk was handed over
}

// batchWriter persists one partition's chunks in batches, off the live path.
// The poll loop calls add; the writer goroutine calls store.WriteBatch with
// retries and never drops a batch. Memory is bounded by pausing the
// partition's fetching at MaxBacklog unpersisted messages.
type batchWriter struct {
	s    *Server
	part int32
	log  *slog.Logger

	mu      sync.Mutex
	pending []chunk
	queued  int // messages in pending
	backlog int // messages added and not yet persisted (pending + in flight)
	paused  bool

	wake chan struct{} // capacity 1
	stop chan struct{} // closed: drain everything, then exit
	done chan struct{} // closed when run returns

	ctx    context.Context // canceled: give up (exit without draining)
	cancel context.CancelFunc
}

func newBatchWriter(s *Server, part int32) *batchWriter {
	ctx, cancel := context.WithCancel(context.Background())
	return &batchWriter{
		s:      s,
		part:   part,
		log:    s.log.With("partition", part),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
}

// add queues c. Called by the poll loop only; never blocks on I/O.
func (w *batchWriter) add(c chunk) {
	n := len(c.msgs)
	w.mu.Lock()
	// The writer needs waking only when it has nothing armed: pending was
	// empty (it sleeps without a timer) or the batch just became full. In
	// between, its timer for the oldest chunk fires anyway; waking it on
	// every poll cost a goroutine wake-up per poll and partition.
	wake := len(w.pending) == 0 || (w.queued < w.s.cfg.BatchMessages && w.queued+n >= w.s.cfg.BatchMessages)
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
	if wake {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// persisted accounts for n written messages and resumes fetching once the
// backlog has drained to half of MaxBacklog.
func (w *batchWriter) persisted(n int) {
	w.mu.Lock()
	w.backlog -= n
	resume := w.paused && w.backlog <= w.s.cfg.MaxBacklog/2
	if resume {
		w.paused = false
		w.s.resumeFetch(w.part)
	}
	w.mu.Unlock()
	w.s.m.backlog.Sub(float64(n))
	if resume {
		w.s.m.pausedPartitions.Dec()
		w.log.Info("store caught up: resuming fetch")
	}
}

// take removes up to about BatchMessages messages worth of chunks (at least
// one chunk) when a flush is due, and reports when to look again otherwise.
func (w *batchWriter) take(force bool) (batch []chunk, wait time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 {
		return nil, -1
	}
	if !force && w.queued < w.s.cfg.BatchMessages {
		if wait := flushDue(w.pending[0].at, w.s.cfg.BatchInterval).Sub(time.Now()); wait > 0 {
			return nil, wait
		}
	}
	k, msgs := 0, 0
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
	return batch, 0
}

// flushDue is when a batch whose oldest chunk arrived at oldest is due: the
// first multiple of interval (on the wall clock) after oldest+interval/2, so
// the oldest chunk waits between half and one and a half intervals. Every partition's writer of the process (and of every controller)
// thus flushes at the same instants, so the store's group commit writes the
// partitions' batches of one interval in one transaction, where flushing
// each at its own oldest chunk's age spread them over the interval: at 1,000
// chat msgs/s over 12 partitions that was a transaction (and its WAL pages)
// per message or two.
func flushDue(oldest time.Time, interval time.Duration) time.Time {
	return oldest.Add(interval / 2).Truncate(interval).Add(interval)
}

// run is the writer goroutine.
func (w *batchWriter) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	stopping := false
	for {
		batch, wait := w.take(stopping)
		if batch != nil {
			if !w.write(batch) {
				return // gave up (ctx canceled)
			}
			continue
		}
		if stopping {
			return // drained
		}
		var tc <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			tc = timer.C
		}
		select {
		case <-w.wake:
		case <-tc:
		case <-w.stop:
			stopping = true
		case <-w.ctx.Done():
			return
		}
		if tc != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// write persists the chunks as one store batch, retrying with backoff until
// it succeeds or the writer gives up. It reports success.
func (w *batchWriter) write(chunks []chunk) bool {
	b := store.Batch{Partition: w.part}
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
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := w.s.store.WriteBatch(w.ctx, b)
		if err == nil {
			w.s.m.batchWriteSeconds.Observe(time.Since(start).Seconds())
			w.s.m.batchSize.Observe(float64(len(b.Messages)))
			w.persisted(len(b.Messages))
			if attempt > 1 {
				w.log.Info("store batch written after retries", "attempts", attempt)
			}
			return true
		}
		if w.ctx.Err() != nil {
			w.log.Warn("giving up unpersisted messages; the next owner replays them from the checkpoint",
				"messages", w.unpersisted(), "checkpoint_next_offset_wanted", b.NextOffset)
			return false
		}
		w.s.m.storeErrors.Inc()
		if attempt == 1 || attempt%20 == 0 {
			w.log.Error("writing store batch, retrying", "attempt", attempt, "messages", len(b.Messages), "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-w.ctx.Done():
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (w *batchWriter) unpersisted() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.backlog
}

// close drains the writer, waiting at most timeout (or not at all when
// drain is false), then stops it and clears its accounting. Called by the
// partition's owner (revocation or shutdown) once the poll loop no longer
// adds to it.
func (w *batchWriter) close(timeout time.Duration, drain bool) {
	if drain {
		close(w.stop)
		t := time.NewTimer(timeout)
		select {
		case <-w.done:
		case <-t.C:
			w.log.Warn("flush timed out", "timeout", timeout)
		}
		t.Stop()
	}
	w.cancel()
	<-w.done
	w.mu.Lock()
	left, paused := w.backlog, w.paused
	w.backlog, w.paused = 0, false
	w.pending = nil
	w.mu.Unlock()
	w.s.m.backlog.Sub(float64(left))
	if paused {
		w.s.m.pausedPartitions.Dec()
	}
}
