package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

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

// TestWriteBatchChunksAndRepeats: a batch larger than one multi-row INSERT
// (64 rows) is stored whole, and rows repeated in a batch keep the per-row
// semantics: a message already present is ignored (the first copy stays),
// a head keeps the highest seq with its offset, a checkpoint the highest
// offset.
func TestWriteBatchChunksAndRepeats(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const n = 64*2 + 3
	b := store.Batch{Partition: 2, NextOffset: 1000}
	for i := 0; i < n; i++ {
		b.Messages = append(b.Messages, store.Message{ID: fmt.Sprint("m", i), Channel: "big", Seq: uint64(i + 1),
			Data: []byte(fmt.Sprintf(`{"i":%d}`, i)), PublishedAt: time.UnixMilli(int64(i)), Partition: 2, Offset: int64(i)})
	}
	// The same message again in the same statement: ignored.
	b.Messages = append(b.Messages, store.Message{ID: "again", Channel: "big", Seq: 1, Data: []byte(`{"i":"again"}`), Partition: 2, Offset: 999})
	b.Heads = []store.Head{
		{Channel: "big", Partition: 2, Epoch: "e", LastSeq: n, Offset: n - 1},
		{Channel: "big", Partition: 2, Epoch: "e", LastSeq: 3, Offset: 2}, // older: must not win
	}
	if err := s.WriteBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	// A later batch with a lower checkpoint.
	b2 := store.Batch{Partition: 2, NextOffset: 500, // lower: the checkpoint keeps 1000
		Messages: []store.Message{{ID: "tail", Channel: "big", Seq: n + 1, Data: []byte(`{}`), Partition: 2, Offset: 600}},
		Heads:    []store.Head{{Channel: "big", Partition: 2, Epoch: "e", LastSeq: n + 1, Offset: 600}}}
	if err := s.WriteBatch(ctx, b2); err != nil {
		t.Fatal(err)
	}
	got, err := s.Messages(ctx, store.Range{Channel: "big", From: 1, To: n + 10, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 {
		t.Fatalf("stored %d messages, want %d", len(got), n+1)
	}
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.Seq)
		}
	}
	if string(got[0].Data) != `{"i":0}` || got[0].ID != "m0" {
		t.Fatalf("seq 1 overwritten by the repeated row: %+v", got[0])
	}
	if string(got[n-1].Data) != fmt.Sprintf(`{"i":%d}`, n-1) {
		t.Fatalf("last row of the short statement: %+v", got[n-1])
	}
	st, err := s.LoadPartition(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if h := st.Heads["big"]; h.LastSeq != n+1 || h.Offset != 600 {
		t.Fatalf("head %+v, want seq %d offset 600", h, n+1)
	}
	if st.NextOffset != 1000 {
		t.Fatalf("checkpoint %d, want 1000 (the max)", st.NextOffset)
	}
}

// TestWriteBatchesRepeatsAcrossBatches: one WriteBatches call writes every
// batch's rows of a kind in shared multi-row statements, so two batches of
// one partition may name the same channel and checkpoint in one statement;
// the per-row semantics still hold whichever batch comes first: the highest
// head and checkpoint win, a repeated message keeps its first copy.
func TestWriteBatchesRepeatsAcrossBatches(t *testing.T) {
	ctx := context.Background()
	msg := func(seq uint64, id string, off int64) store.Message {
		return store.Message{ID: id, Channel: "c", Seq: seq, Data: []byte(`{}`), Partition: 3, Offset: off}
	}
	newer := store.Batch{Partition: 3, NextOffset: 60,
		Messages: []store.Message{msg(4, "four", 40), msg(5, "five", 50)},
		Heads:    []store.Head{{Channel: "c", Partition: 3, Epoch: "e1", LastSeq: 5, Offset: 50}}}
	older := store.Batch{Partition: 3, NextOffset: 45,
		Messages: []store.Message{msg(4, "four again", 40)},
		Heads:    []store.Head{{Channel: "c", Partition: 3, Epoch: "e2", LastSeq: 4, Offset: 40}}}
	for name, order := range map[string][]store.Batch{"newer first": {newer, older}, "older first": {older, newer}} {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			if errs := s.WriteBatches(ctx, order); errors.Join(errs...) != nil {
				t.Fatal(errors.Join(errs...))
			}
			st, err := s.LoadPartition(ctx, 3)
			if err != nil {
				t.Fatal(err)
			}
			if h := st.Heads["c"]; h.LastSeq != 5 || h.Offset != 50 || h.Epoch != order[0].Heads[0].Epoch {
				t.Fatalf("head %+v, want seq 5 offset 50 and the first batch's epoch %q", h, order[0].Heads[0].Epoch)
			}
			if st.NextOffset != 60 {
				t.Fatalf("checkpoint %d, want 60", st.NextOffset)
			}
			got, err := s.Messages(ctx, store.Range{Channel: "c", From: 1, To: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0].ID != order[0].Messages[0].ID || got[1].ID != "five" {
				t.Fatalf("messages %+v, want seq 4 as the first batch wrote it, then seq 5", got)
			}
		})
	}
}
