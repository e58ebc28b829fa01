// Package memstore is an in-memory implementation of store.Store, the twin
// of store/sqlite and store/mongo for unit tests of the services. It passes
// the conformance suite in store/storetest.
//
// Concurrency: every method is safe for concurrent use; one RWMutex guards
// all state (writers exclusive, readers shared). Byte slices are copied on
// the way in and out, so callers may reuse or modify their buffers.
package memstore

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

// ErrClosed is returned by every method after Close.
var ErrClosed = fmt.Errorf("memstore closed: %w", store.ErrUnavailable)

type channelRec struct {
	ch         store.Channel
	lastOffset int64
}

// Store is an in-memory store.Store.
type Store struct {
	mu          sync.RWMutex
	closed      bool
	channels    map[string]*channelRec
	messages    map[string][]store.Message // per channel, sorted by seq
	checkpoints map[int32]int64
	leases      map[string]store.Lease
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		channels:    make(map[string]*channelRec),
		messages:    make(map[string][]store.Message),
		checkpoints: make(map[int32]int64),
		leases:      make(map[string]store.Lease),
	}
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func cloneMsg(m store.Message) store.Message {
	m.Info = cloneBytes(m.Info)
	if len(m.Info) == 0 {
		m.Info = nil
	}
	m.Data = cloneBytes(m.Data)
	m.PublishedAt = time.UnixMilli(m.PublishedAt.UnixMilli()).UTC() // stores keep milliseconds
	return m
}

func (s *Store) check(ctx context.Context) error {
	if s.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// WriteBatch implements store.Store.
func (s *Store) WriteBatch(ctx context.Context, b store.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	s.writeMessagesAndHeads(b)
	if cur, ok := s.checkpoints[b.Partition]; !ok || b.NextOffset > cur {
		s.checkpoints[b.Partition] = b.NextOffset
	}
	return nil
}

// WriteMessagesAndHeadsOnly writes the messages and heads of b but not its
// checkpoint, as a crash between the two steps would. It is the
// storetest.CrashWriter test hook.
func (s *Store) WriteMessagesAndHeadsOnly(ctx context.Context, b store.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	s.writeMessagesAndHeads(b)
	return nil
}

func (s *Store) writeMessagesAndHeads(b store.Batch) {
	for _, m := range b.Messages {
		s.insert(cloneMsg(m))
	}
	for _, h := range b.Heads {
		rec, ok := s.channels[h.Channel]
		if !ok {
			s.channels[h.Channel] = &channelRec{
				ch: store.Channel{
					Name:      h.Channel,
					Partition: h.Partition,
					Epoch:     h.Epoch,
					LastSeq:   h.LastSeq,
				},
				lastOffset: h.Offset,
			}
			continue
		}
		if h.LastSeq > rec.ch.LastSeq {
			rec.ch.LastSeq = h.LastSeq
			rec.lastOffset = h.Offset
		}
	}
}

func (s *Store) insert(m store.Message) {
	msgs := s.messages[m.Channel]
	n := len(msgs)
	if n == 0 || msgs[n-1].Seq < m.Seq {
		s.messages[m.Channel] = append(msgs, m)
		return
	}
	i := sort.Search(n, func(i int) bool { return msgs[i].Seq >= m.Seq })
	if i < n && msgs[i].Seq == m.Seq {
		return // duplicate: keep the first write
	}
	msgs = append(msgs, store.Message{})
	copy(msgs[i+1:], msgs[i:])
	msgs[i] = m
	s.messages[m.Channel] = msgs
}

// LoadPartition implements store.Store.
func (s *Store) LoadPartition(ctx context.Context, partition int32) (store.PartitionState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return store.PartitionState{}, err
	}
	next := s.checkpoints[partition]
	st := store.PartitionState{Partition: partition, NextOffset: next, Heads: make(map[string]store.Head)}
	for name, rec := range s.channels {
		if rec.ch.Partition != partition {
			continue
		}
		h := store.Head{Channel: name, Partition: partition, Epoch: rec.ch.Epoch}
		if rec.lastOffset < next {
			h.LastSeq, h.Offset = rec.ch.LastSeq, rec.lastOffset
		} else {
			// The stored head is ahead of the checkpoint: recompute it from
			// the messages written before the checkpoint.
			h.Offset = -1
			for _, m := range s.messages[name] {
				if m.Partition == partition && m.Offset < next && m.Seq > h.LastSeq {
					h.LastSeq, h.Offset = m.Seq, m.Offset
				}
			}
			if rec.ch.ArchivedThrough > h.LastSeq {
				h.LastSeq, h.Offset = rec.ch.ArchivedThrough, -1
			}
			if h.LastSeq == 0 {
				h.Offset = 0
			}
		}
		st.Heads[name] = h
	}
	return st, nil
}

// Channel implements store.Store.
func (s *Store) Channel(ctx context.Context, name string) (store.Channel, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return store.Channel{}, err
	}
	rec, ok := s.channels[name]
	if !ok {
		return store.Channel{}, fmt.Errorf("channel %q: %w", name, store.ErrNotFound)
	}
	return rec.ch, nil
}

// Channels implements store.Store. limit <= 0 means no cap.
func (s *Store) Channels(ctx context.Context, after string, limit int) ([]store.Channel, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out := make([]store.Channel, 0, len(s.channels))
	for name, rec := range s.channels {
		if name > after {
			out = append(out, rec.ch)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Messages implements store.Store. r.To == 0 means no upper bound.
func (s *Store) Messages(ctx context.Context, r store.Range) ([]store.Message, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	msgs := s.messages[r.Channel]
	to := r.To
	if to == 0 {
		to = ^uint64(0)
	}
	lo := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq >= r.From })
	hi := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq > to })
	if lo >= hi {
		return []store.Message{}, nil
	}
	sel := msgs[lo:hi]
	n := len(sel)
	if r.Limit > 0 && n > r.Limit {
		n = r.Limit
	}
	out := make([]store.Message, 0, n)
	if r.Desc {
		for i := len(sel) - 1; i >= 0 && len(out) < n; i-- {
			out = append(out, cloneMsg(sel[i]))
		}
	} else {
		for i := 0; i < n; i++ {
			out = append(out, cloneMsg(sel[i]))
		}
	}
	return out, nil
}

// SetArchivedThrough implements store.Store. It returns ErrNotFound for an
// unknown channel.
func (s *Store) SetArchivedThrough(ctx context.Context, channel string, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	rec, ok := s.channels[channel]
	if !ok {
		return fmt.Errorf("channel %q: %w", channel, store.ErrNotFound)
	}
	if seq > rec.ch.ArchivedThrough {
		rec.ch.ArchivedThrough = seq
	}
	return nil
}

// Purge implements store.Store. An unknown channel purges nothing.
func (s *Store) Purge(ctx context.Context, channel string, through uint64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	rec, ok := s.channels[channel]
	if !ok {
		return 0, nil
	}
	through = min(through, rec.ch.ArchivedThrough)
	msgs := s.messages[channel]
	i := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq > through })
	if i == 0 {
		return 0, nil
	}
	rest := make([]store.Message, len(msgs)-i)
	copy(rest, msgs[i:])
	s.messages[channel] = rest
	return int64(i), nil
}

// AcquireLease implements store.Store.
func (s *Store) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (store.Lease, bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return store.Lease{}, false, fmt.Errorf("acquiring lease %q: name, owner and a positive ttl are required", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return store.Lease{}, false, err
	}
	now := time.Now()
	if cur, ok := s.leases[name]; ok && cur.Owner != owner && cur.Expires.After(now) {
		return cur, false, nil
	}
	l := store.Lease{Name: name, Owner: owner, Expires: time.UnixMilli(now.Add(ttl).UnixMilli()).UTC()}
	s.leases[name] = l
	return l, true, nil
}

// ReleaseLease implements store.Store.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	if cur, ok := s.leases[name]; ok && cur.Owner == owner {
		delete(s.leases, name)
	}
	return nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.check(ctx)
}

// Close implements store.Store. Later calls fail with ErrClosed; closing
// twice is a no-op.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
