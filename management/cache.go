package management

import (
	"container/list"
	"context"
	"strconv"
	"sync"

	"github.com/herald-chat/herald/internal/store"
)

// chunkCache is an LRU of decoded chunks bounded in (estimated) bytes.
// Chunks are immutable, so entries never go stale. Concurrent misses of one
// chunk share a single load. Safe for concurrent use.
type chunkCache struct {
	max int64

	mu       sync.Mutex
	size     int64
	ll       *list.List               // front = most recent; values *cacheEntry
	items    map[string]*list.Element // guarded by mu
	inflight map[string]*load         // guarded by mu
	onSize   func(int64)              // called with mu held
}

type cacheEntry struct {
	key  string
	msgs []store.Message
	size int64
}

type load struct {
	done chan struct{}
	msgs []store.Message
	err  error
}

func newChunkCache(maxBytes int64, onSize func(int64)) *chunkCache {
	if onSize == nil {
		onSize = func(int64) {}
	}
	return &chunkCache{max: maxBytes, ll: list.New(), items: map[string]*list.Element{}, inflight: map[string]*load{}, onSize: onSize}
}

func cacheKey(channel string, n uint64) string {
	return strconv.FormatUint(n, 10) + "/" + channel
}

// msgSize estimates the memory held by a decoded message.
func msgSize(m *store.Message) int64 {
	return int64(160 + len(m.ID) + len(m.Channel) + len(m.Sender) + len(m.Info) + len(m.Data) + len(m.ClientMsgID))
}

// get returns the chunk from the cache (hit=true) or loads it with fn,
// sharing the load with concurrent callers. The returned slice must not be
// modified.
func (c *chunkCache) get(ctx context.Context, key string, fn func() ([]store.Message, error)) (msgs []store.Message, hit bool, err error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.ll.MoveToFront(el)
		msgs := el.Value.(*cacheEntry).msgs
		c.mu.Unlock()
		return msgs, true, nil
	}
	if l, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-l.done:
			return l.msgs, false, l.err
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	l := &load{done: make(chan struct{})}
	c.inflight[key] = l
	c.mu.Unlock()

	l.msgs, l.err = fn()

	c.mu.Lock()
	delete(c.inflight, key)
	if l.err == nil {
		c.addLocked(key, l.msgs)
	}
	c.mu.Unlock()
	close(l.done)
	return l.msgs, false, l.err
}

// addLocked inserts an entry and evicts least recently used ones; c.mu
// must be held.
func (c *chunkCache) addLocked(key string, msgs []store.Message) {
	var size int64
	for i := range msgs {
		size += msgSize(&msgs[i])
	}
	if size > c.max {
		return // larger than the whole cache: do not cache
	}
	if el, ok := c.items[key]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, msgs: msgs, size: size})
	c.size += size
	for c.size > c.max {
		el := c.ll.Back()
		e := el.Value.(*cacheEntry)
		c.ll.Remove(el)
		delete(c.items, e.key)
		c.size -= e.size
	}
	c.onSize(c.size)
}

// bytes returns the current estimated size.
func (c *chunkCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
