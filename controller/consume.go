package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/kafka"
	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/tick"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
)

// partState is an owned partition: its channels' heads and recent
// publications, its fetch position and its batch writer.
type partState struct {
	id int32
	w  *batchWriter

	// mu guards chans (and their contents) and next. The fetch loops write
	// them once per fetch; Recover reads them.
	mu    sync.RWMutex
	chans map[string]*chanState
	next  int64 // next offset to consume
	// catchUpTo is the partition's end offset when it was assigned; until
	// next reaches it the heads may lag those a relay has seen.
	catchUpTo int64

	touched map[string]int // fetch loop scratch: channel → index in a chunk's heads
	// ringed are the channels whose ring is not empty, so that dropping
	// idle rings walks those, not every channel the partition has a head
	// for (all of them since the store began).
	ringed []*chanState

	// advanced is closed (and replaced) whenever next moves: Published
	// waits on it. api remembers the outcome of the server API's records by
	// offset (apiOrder: oldest first, at most maxAPIRecords). Under mu.
	advanced chan struct{}
	api      map[int64]apiRecord
	apiOrder []int64
}

// chanState is a channel's head and its ring of recent publications (dense
// seqs, oldest at pos once the ring is full).
type chanState struct {
	epoch string
	seq   uint64
	ring  []*heraldv1.Publication
	pos   int
	last  int64 // unix ns of the fetch that pushed the newest publication
	// dedupe is the idempotency window, nil until the channel's first
	// record with a client_msg_id since assignment (api.go).
	dedupe *dedupeWin
}

func (c *chanState) push(p *heraldv1.Publication, size int) {
	if size <= 0 {
		return
	}
	if len(c.ring) < size {
		if len(c.ring) == cap(c.ring) {
			grown := make([]*heraldv1.Publication, len(c.ring), min(size, max(4, 2*cap(c.ring))))
			copy(grown, c.ring)
			c.ring = grown
		}
		c.ring = append(c.ring, p)
		return
	}
	c.ring[c.pos] = p
	c.pos = (c.pos + 1) % size
}

// since returns the ring's publications with seq > since, oldest first, and
// the oldest seq the ring holds (0 when empty).
func (c *chanState) since(since uint64) ([]*heraldv1.Publication, uint64) {
	n := len(c.ring)
	if n == 0 {
		return nil, 0
	}
	oldest := c.ring[c.pos].Seq
	k := 0
	if since >= oldest {
		k = int(since - oldest + 1)
	}
	if k >= n {
		return nil, oldest
	}
	out := make([]*heraldv1.Publication, 0, n-k)
	for ; k < n; k++ {
		out = append(out, c.ring[(c.pos+k)%n])
	}
	return out, oldest
}

// epochFor is a channel's epoch: derived from the message log's identity
// (the topic ID) and the channel, so it is known before the channel's first
// message (a client subscribing to an empty channel gets the epoch it will
// keep), a replay after a crash yields the same epoch, and it changes only
// when the log starts over (the topic is recreated), which is exactly when
// clients' offsets stop meaning anything.
func epochFor(streamID, channel string) string {
	sum := sha256.Sum256([]byte(streamID + "|" + channel))
	return hex.EncodeToString(sum[:8])
}

func (s *Server) part(p int32) *partState {
	s.partsMu.RLock()
	defer s.partsMu.RUnlock()
	return s.parts[p]
}

func (s *Server) ownedParts() []int32 {
	s.partsMu.RLock()
	defer s.partsMu.RUnlock()
	out := make([]int32, 0, len(s.parts))
	for p := range s.parts {
		out = append(out, p)
	}
	return out
}

// onAssigned loads the state of newly assigned partitions from the store
// (retrying until it succeeds or the client closes) and starts their batch
// writers. With BlockRebalanceOnPoll it never runs during record processing.
func (s *Server) onAssigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	parts := assigned[s.cfg.Topic]
	if len(parts) == 0 {
		return
	}
	ends := s.endOffsets(ctx, cl, parts)
	for _, p := range parts {
		st, err := s.loadPartition(ctx, p)
		if err != nil {
			s.log.Error("partition assigned but its state could not be loaded", "partition", p, "err", err)
			continue
		}
		ps := &partState{
			id:        p,
			chans:     make(map[string]*chanState, len(st.Heads)),
			next:      st.NextOffset,
			catchUpTo: ends[p],
			touched:   make(map[string]int),
			advanced:  make(chan struct{}),
		}
		for name, h := range st.Heads {
			ps.chans[name] = &chanState{epoch: h.Epoch, seq: h.LastSeq}
		}
		s.partsMu.Lock()
		old := s.parts[p]
		s.partsMu.Unlock()
		if old != nil { // not expected: assigned twice without a revoke
			s.closePart(old, true)
		}
		ps.w = newBatchWriter(s, s.sw, p)
		s.partsMu.Lock()
		s.parts[p] = ps
		s.partsMu.Unlock()
		s.log.Info("partition assigned", "partition", p, "next_offset", st.NextOffset, "channels", len(st.Heads), "end_offset", ends[p])
	}
	s.publishOwnership()
}

func (s *Server) loadPartition(ctx context.Context, p int32) (store.PartitionState, error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		st, err := s.store.LoadPartition(ctx, p)
		if err == nil {
			if st.Heads == nil {
				st.Heads = map[string]store.Head{}
			}
			return st, nil
		}
		if ctx.Err() != nil {
			return st, fmt.Errorf("loading partition %d: %w", p, err)
		}
		s.m.storeErrors.Inc()
		if attempt == 1 || attempt%10 == 0 {
			s.log.Error("loading partition state, retrying", "partition", p, "attempt", attempt, "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// endOffsets returns the end offsets of parts; a partition it cannot learn
// is reported as -1 (treated as caught up).
func (s *Server) endOffsets(ctx context.Context, cl *kgo.Client, parts []int32) map[int32]int64 {
	out := make(map[int32]int64, len(parts))
	for _, p := range parts {
		out[p] = -1
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(lctx, s.cfg.Topic)
	if err != nil {
		s.log.Warn("listing end offsets of assigned partitions", "err", err)
		return out
	}
	offs.Each(func(o kadm.ListedOffset) {
		if _, ok := out[o.Partition]; ok && o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out
}

// onRevoked handles revoked and lost partitions: they stop being announced,
// their pending batches are flushed (bounded by ShutdownTimeout) and their
// state is dropped. Whatever is not flushed is replayed by the next owner
// from the checkpoint.
func (s *Server) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	parts := revoked[s.cfg.Topic]
	if len(parts) == 0 {
		return
	}
	s.dropParts(parts, true)
}

// dropParts removes parts from the owned set, announces it, then flushes
// (when drain) and stops their writers.
func (s *Server) dropParts(parts []int32, drain bool) {
	var dropped []*partState
	s.partsMu.Lock()
	for _, p := range parts {
		if ps, ok := s.parts[p]; ok {
			delete(s.parts, p)
			dropped = append(dropped, ps)
		}
	}
	s.partsMu.Unlock()
	if len(dropped) == 0 {
		return
	}
	if s.fetch != nil {
		s.fetch.barrier() // a response being processed may hold their records
	}
	s.publishOwnership()
	for _, ps := range dropped {
		s.closePart(ps, drain)
		s.log.Info("partition released", "partition", ps.id, "flushed", drain)
	}
}

func (s *Server) closePart(ps *partState, drain bool) {
	ps.mu.Lock()
	close(ps.advanced) // Published calls waiting on it find the partition gone
	ps.advanced = make(chan struct{})
	ps.mu.Unlock()
	ps.w.close(s.cfg.ShutdownTimeout, drain)
	s.resumeFetch(ps.id) // a pause would outlive the assignment
	s.m.lag.DeleteLabelValues(strconv.Itoa(int(ps.id)))
}

// processPartition sequences one fetch's records of one partition.
func (s *Server) processPartition(ctx context.Context, fp kgo.FetchTopicPartition, fo *fanout, now time.Time, bl *badLog) {
	if fp.Topic != s.cfg.Topic || len(fp.Records) == 0 {
		return
	}
	ps := s.part(fp.Partition)
	if ps == nil {
		s.log.Warn("records of a partition this controller does not own, ignored", "partition", fp.Partition, "records", len(fp.Records))
		return
	}
	nparts := s.numParts.Load()
	var (
		chunks   []chunk // one per BatchMessages messages, in offset order
		msgs     []store.Message
		heads    []store.Head
		consumed int
	)
	cut := func(next int64) {
		chunks = append(chunks, chunk{msgs: msgs, heads: heads, next: next, at: now})
		msgs, heads = nil, nil
		clear(ps.touched)
	}
	ps.mu.Lock()
	start := ps.next
	for _, rec := range fp.Records {
		if rec.Offset < ps.next {
			continue // already sequenced (a refetch)
		}
		m := &heraldv1.Message{}
		err := proto.Unmarshal(rec.Value, m)
		var cs *chanState
		if err == nil && m.ClientMsgId != "" && s.cfg.DedupeSeqs > 0 && m.Channel != "" {
			if cs = ps.chans[m.Channel]; cs == nil || cs.dedupe == nil {
				// The channel's first keyed record since assignment: build
				// its idempotency window from the store, without the lock
				// (this goroutine is the only writer of the partition).
				head := uint64(0)
				if cs != nil {
					head = cs.seq
				}
				ps.mu.Unlock()
				w := s.loadDedupe(ctx, m.Channel, head)
				ps.mu.Lock()
				if ctx.Err() != nil {
					break // shutting down: this record is left to the next owner
				}
				if cs = ps.chans[m.Channel]; cs == nil {
					cs = &chanState{}
					ps.chans[m.Channel] = cs
				}
				cs.dedupe = w
			}
		}
		ps.next = rec.Offset + 1
		consumed++
		if err != nil {
			s.badRecord(bl, rec, "undecodable value", err)
			continue
		}
		if m.Channel == "" {
			s.badRecord(bl, rec, "empty channel", nil)
			continue
		}
		if nparts > 0 && partition.For(m.Channel, nparts) != rec.Partition {
			s.badRecord(bl, rec, "channel belongs to partition "+strconv.Itoa(int(partition.For(m.Channel, nparts))), nil)
			continue
		}
		if cs == nil {
			cs = ps.chans[m.Channel]
		}
		if cs == nil {
			cs = &chanState{}
			ps.chans[m.Channel] = cs
		}
		if cs.epoch == "" {
			cs.epoch = epochFor(s.streamID, m.Channel)
		}
		fromAPI := isAPIRecord(rec)
		if cs.dedupe != nil && m.ClientMsgId != "" {
			if first, dup := s.duplicate(cs, m); dup {
				s.m.duplicates.Inc()
				if fromAPI {
					ps.rememberAPI(apiRecord{offset: rec.Offset, seq: first, duplicate: true})
				}
				continue
			}
			s.remember(cs, m, cs.seq+1)
		}
		if fromAPI {
			ps.rememberAPI(apiRecord{offset: rec.Offset, seq: cs.seq + 1})
		}
		cs.seq++
		pub := &heraldv1.Publication{Channel: m.Channel, Seq: cs.seq, Epoch: cs.epoch, Message: m}
		if cs.ring == nil && s.cfg.RingSize > 0 {
			ps.ringed = append(ps.ringed, cs)
		}
		cs.push(pub, s.cfg.RingSize)
		cs.last = now.UnixNano()
		if msgs == nil {
			msgs = make([]store.Message, 0, min(len(fp.Records), s.cfg.BatchMessages))
		}
		msgs = append(msgs, store.Message{
			ID:          m.Id,
			Channel:     m.Channel,
			Seq:         cs.seq,
			Sender:      m.Sender,
			Info:        m.Info,
			Data:        m.Data,
			ClientMsgID: m.ClientMsgId,
			PublishedAt: time.UnixMilli(m.PublishedAt),
			Partition:   rec.Partition,
			Offset:      rec.Offset,
		})
		h := store.Head{Channel: m.Channel, Partition: rec.Partition, Epoch: cs.epoch, LastSeq: cs.seq, Offset: rec.Offset}
		if i, ok := ps.touched[m.Channel]; ok {
			heads[i] = h
		} else {
			ps.touched[m.Channel] = len(heads)
			heads = append(heads, h)
		}
		fo.route(pub)
		if !rec.Timestamp.IsZero() {
			s.m.consumeToStream.Observe(now.Sub(rec.Timestamp).Seconds())
		}
		if len(msgs) >= s.cfg.BatchMessages {
			cut(ps.next)
		}
	}
	next := ps.next
	if next > start && (len(chunks) == 0 || chunks[len(chunks)-1].next < next) {
		cut(next) // the rest, or only skipped records: the checkpoint still moves
	}
	if next > start {
		close(ps.advanced) // wakes Published calls waiting for an offset
		ps.advanced = make(chan struct{})
	}
	ps.mu.Unlock()

	for _, c := range chunks {
		ps.w.add(c)
	}
	s.m.recordsConsumed.Add(float64(consumed))
	if fp.HighWatermark >= next {
		s.m.lag.WithLabelValues(strconv.Itoa(int(fp.Partition))).Set(float64(fp.HighWatermark - next))
	}
}

// evictIdleRings drops the rings of the owned channels without a
// publication since idle before now, keeping their heads, and returns how
// many it dropped. Recover serves such a channel from the store (its ring
// was persisted long before). One partition's lock is held while the
// channels with a ring are walked.
func (s *Server) evictIdleRings(now time.Time, idle time.Duration) int {
	cut := now.Add(-idle).UnixNano()
	n := 0
	for _, p := range s.ownedParts() {
		ps := s.part(p)
		if ps == nil {
			continue
		}
		ps.mu.Lock()
		keep := ps.ringed[:0]
		for _, cs := range ps.ringed {
			if cs.last < cut {
				cs.ring, cs.pos = nil, 0
				n++
				continue
			}
			keep = append(keep, cs)
		}
		clear(ps.ringed[len(keep):])
		ps.ringed = keep
		ps.mu.Unlock()
	}
	return n
}

// ringJanitor runs evictIdleRings every quarter of RingIdle until ctx ends.
func (s *Server) ringJanitor(ctx context.Context) {
	idle := s.cfg.RingIdle
	if idle <= 0 || s.cfg.RingSize == 0 {
		return
	}
	tick.Every(ctx, max(idle/4, time.Second), func(now time.Time) {
		if n := s.evictIdleRings(now, idle); n > 0 {
			s.m.ringsEvicted.Add(float64(n))
		}
	})
}

// badLog rate-limits bad-record logs (one per fetch loop).
type badLog struct {
	last       time.Time
	suppressed int
}

func (s *Server) badRecord(bl *badLog, rec *kgo.Record, reason string, err error) {
	s.m.badRecords.Inc()
	if time.Since(bl.last) < time.Second {
		bl.suppressed++
		return
	}
	args := []any{"partition", rec.Partition, "offset", rec.Offset, "reason", reason}
	if err != nil {
		args = append(args, "err", err)
	}
	if bl.suppressed > 0 {
		args = append(args, "suppressed_since_last_log", bl.suppressed)
	}
	s.log.Warn("skipping bad record", args...)
	bl.last, bl.suppressed = time.Now(), 0
}

// isAPIRecord reports whether rec was produced by the server API (it
// carries kafka.APIHeader).
func isAPIRecord(rec *kgo.Record) bool {
	for _, h := range rec.Headers {
		if h.Key == kafka.APIHeader {
			return true
		}
	}
	return false
}
