package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/sqlite"
	"github.com/herald-chat/herald/internal/store/storetest"
)

func open(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) store.Store { return open(t) })
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	b := store.Batch{Partition: 1, NextOffset: 5,
		Messages: []store.Message{{ID: "x", Channel: "c", Seq: 1, Data: []byte(`{}`), Partition: 1, Offset: 4}},
		Heads:    []store.Head{{Channel: "c", Partition: 1, Epoch: "e", LastSeq: 1, Offset: 4}}}
	if err := s.WriteBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.LoadPartition(ctx, 1)
	if err != nil || st.NextOffset != 5 || st.Heads["c"].LastSeq != 1 {
		t.Fatalf("after reopen: %+v, %v", st, err)
	}
}
