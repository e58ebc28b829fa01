package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/storetest"
	"github.com/herald-chat/herald/internal/testutil/teststore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	code := m.Run()
	teststore.Stop()
	os.Exit(code)
}

// testStore is a store implementation the guarantee tests run against.
type testStore struct {
	name string
	open func(tb testing.TB) store.Store
}

// crashableStore is what every test store implements: a Store with the
// storetest.CrashWriter hook (messages and heads without the checkpoint).
type crashableStore interface {
	store.Store
	storetest.CrashWriter
}

var allStores = []testStore{
	{"memstore", teststore.Memstore},
	{"sqlite", teststore.SQLite},
	{"mongo-ferret", teststore.Mongo},
}

// forEachStore runs f as a parallel subtest per store implementation.
func forEachStore(t *testing.T, f func(t *testing.T, ts testStore)) {
	for _, ts := range allStores {
		t.Run(ts.name, func(t *testing.T) {
			t.Parallel()
			f(t, ts)
		})
	}
}

// crashSwitch simulates the death of a controller process inside the test
// process: once tripped, the controller's Kafka connections are cut and no
// new ones can be dialed (its group session expires, it cannot leave the
// group, fetch or heartbeat), its store writes fail, and its relay streams
// are closed. Nothing it does afterwards is visible to anyone.
type crashSwitch struct {
	mu      sync.Mutex
	dead    bool
	conns   []net.Conn
	srv     *Server
	tripped chan struct{}
}

func newCrashSwitch() *crashSwitch { return &crashSwitch{tripped: make(chan struct{})} }

var errCrashed = errors.New("controller crashed (test)")

func (c *crashSwitch) dial(ctx context.Context, network, host string) (net.Conn, error) {
	c.mu.Lock()
	dead := c.dead
	c.mu.Unlock()
	if dead {
		return nil, errCrashed
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		conn.Close()
		return nil, errCrashed
	}
	c.conns = append(c.conns, conn)
	return conn, nil
}

func (c *crashSwitch) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// trip crashes the controller (idempotent).
func (c *crashSwitch) trip() {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	conns := c.conns
	c.conns = nil
	srv := c.srv
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	if srv != nil {
		srv.closeStreams(status.Error(codes.Unavailable, "controller crashed (test)"))
	}
	close(c.tripped)
}

func (c *crashSwitch) waitTripped(tb testing.TB) {
	tb.Helper()
	select {
	case <-c.tripped:
	case <-time.After(30 * time.Second):
		tb.Fatal("the crash point was never reached")
	}
}

// crashMode is where a crashStore trips its switch.
type crashMode int

const (
	// crashAfterHeads: the batch's messages and heads are written, then the
	// process dies before the checkpoint.
	crashAfterHeads crashMode = iota + 1
	// crashMidBatch: the first half of the batch's messages are written
	// (no heads, no checkpoint), then the process dies.
	crashMidBatch
	// crashBeforeWrite: the process dies when the batch writer starts a
	// write (nothing of the batch is stored).
	crashBeforeWrite
)

// crashStore is the store as one controller process sees it: once its
// crashSwitch is tripped every call fails. When armed, the next batch write
// trips the switch at the armed step. hold, when set, blocks batch writes
// until it is closed or the switch trips.
type crashStore struct {
	crashableStore
	sw    *crashSwitch
	mode  atomic.Int32
	hold  atomic.Pointer[chan struct{}]
	holds atomic.Int32 // batch writes currently held
}

func newCrashStore(tb testing.TB, st store.Store, sw *crashSwitch) *crashStore {
	tb.Helper()
	cs, ok := st.(crashableStore)
	if !ok {
		tb.Fatalf("%T does not implement storetest.CrashWriter", st)
	}
	return &crashStore{crashableStore: cs, sw: sw}
}

func (s *crashStore) arm(m crashMode) { s.mode.Store(int32(m)) }

// holdWrites makes batch writes block until the returned func is called.
func (s *crashStore) holdWrites() (release func()) {
	ch := make(chan struct{})
	s.hold.Store(&ch)
	var once sync.Once
	return func() { once.Do(func() { s.hold.Store(nil); close(ch) }) }
}

func (s *crashStore) WriteBatch(ctx context.Context, b store.Batch) error {
	if s.sw.isDead() {
		return errCrashed
	}
	if h := s.hold.Load(); h != nil {
		s.holds.Add(1)
		select {
		case <-*h:
		case <-s.sw.tripped:
		case <-ctx.Done():
		}
		s.holds.Add(-1)
		if s.sw.isDead() {
			return errCrashed
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	switch crashMode(s.mode.Swap(0)) {
	case crashAfterHeads:
		if err := s.WriteMessagesAndHeadsOnly(ctx, b); err != nil {
			return err
		}
		s.sw.trip()
		return errCrashed
	case crashMidBatch:
		half := store.Batch{Partition: b.Partition, Messages: b.Messages[:len(b.Messages)/2]}
		if err := s.WriteMessagesAndHeadsOnly(ctx, half); err != nil {
			return err
		}
		s.sw.trip()
		return errCrashed
	case crashBeforeWrite:
		s.sw.trip()
		return errCrashed
	}
	return s.crashableStore.WriteBatch(ctx, b)
}

func (s *crashStore) LoadPartition(ctx context.Context, p int32) (store.PartitionState, error) {
	if s.sw.isDead() {
		return store.PartitionState{}, errCrashed
	}
	return s.crashableStore.LoadPartition(ctx, p)
}

// downStore fails every batch write with store.ErrUnavailable while down.
type downStore struct {
	store.Store
	down   atomic.Bool
	failed atomic.Int64
}

func (s *downStore) WriteBatch(ctx context.Context, b store.Batch) error {
	if s.down.Load() {
		s.failed.Add(1)
		return fmt.Errorf("writing batch of partition %d: %w", b.Partition, store.ErrUnavailable)
	}
	return s.Store.WriteBatch(ctx, b)
}
