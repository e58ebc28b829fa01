package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

const (
	benchBatch    = 1000
	benchChannels = 50
)

// benchBatchN builds the n-th batch of benchBatch messages spread over
// benchChannels channels of one partition, continuing seqs and offsets.
func benchBatchN(n int) store.Batch {
	b := store.Batch{Partition: 0, NextOffset: int64((n + 1) * benchBatch)}
	data := []byte(`{"text":"hello, this is a typical short chat message with a bit of text","mentions":[]}`)
	info := []byte(`{"name":"Ann"}`)
	now := time.Now()
	perChan := benchBatch / benchChannels
	for i := 0; i < benchBatch; i++ {
		ch := i % benchChannels
		seq := uint64(n*perChan + i/benchChannels + 1)
		off := int64(n*benchBatch + i)
		b.Messages = append(b.Messages, store.Message{
			ID: fmt.Sprintf("01J%023d", off), Channel: fmt.Sprintf("room:%d", ch), Seq: seq,
			Sender: "user-1", Info: info, Data: data, ClientMsgID: "", PublishedAt: now,
			Partition: 0, Offset: off,
		})
	}
	for ch := 0; ch < benchChannels; ch++ {
		last := benchBatch - benchChannels + ch
		b.Heads = append(b.Heads, store.Head{Channel: fmt.Sprintf("room:%d", ch), Partition: 0, Epoch: "e",
			LastSeq: uint64((n + 1) * perChan), Offset: int64(n*benchBatch + last)})
	}
	return b
}

func benchBatches(b *testing.B) []store.Batch {
	out := make([]store.Batch, b.N)
	for i := range out {
		out[i] = benchBatchN(i)
	}
	return out
}

// BenchmarkWriteBatch measures Store.WriteBatch of 1,000-message batches.
func BenchmarkWriteBatch(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batches := benchBatches(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.WriteBatch(ctx, batches[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkRawInsert is the baseline: the same rows with a plain prepared
// INSERT in one transaction, same schema and pragmas, no heads or checkpoint.
func BenchmarkRawInsert(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "raw.db")
	s, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	_ = s.Close()
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	stmt, err := db.PrepareContext(ctx, `INSERT INTO messages
	(channel, seq, id, sender, info, data, client_msg_id, published_at_ms, "partition", "offset")
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	batches := benchBatches(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		ins := tx.StmtContext(ctx, stmt)
		for _, m := range batches[i].Messages {
			if _, err := ins.ExecContext(ctx, m.Channel, int64(m.Seq), m.ID, m.Sender, m.Info, m.Data,
				m.ClientMsgID, m.PublishedAt.UnixMilli(), int64(m.Partition), m.Offset); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkWriteBatchConcurrentSmall is the controller's shape under a chat
// load: one batch writer per partition (12), each writing small batches (8
// messages on 8 channels, their heads and the checkpoint) as fast as the
// store takes them. One op is one batch; msgs/s counts all partitions.
func BenchmarkWriteBatchConcurrentSmall(b *testing.B) { benchConcurrent(b, 8, 100) }

// BenchmarkWriteBatchConcurrentChat is the same at what a 20 ms flush
// interval holds per partition at 1,000 chat msgs/s: 2 messages per batch,
// 1,000 channels in all, so a commit group is a dozen batches of a message
// or two each.
func BenchmarkWriteBatchConcurrentChat(b *testing.B) { benchConcurrent(b, 2, 84) }

// benchConcurrent runs 12 partition writers, each writing batches of
// perBatch messages on channels rotating over chans channels of its own.
func benchConcurrent(b *testing.B, perBatch, chans int) {
	const parts = 12
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := []byte(`{"text":"hello, this is a typical short chat message with a bit of text","mentions":[]}`)
	var next [parts]atomic.Int64
	var part atomic.Int32
	b.ReportAllocs()
	b.SetParallelism((parts + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := int(part.Add(1)-1) % parts
		now := time.Now()
		for pb.Next() {
			n := next[p].Add(1) - 1
			bt := store.Batch{Partition: int32(p), NextOffset: (n + 1) * int64(perBatch)}
			for i := 0; i < perBatch; i++ {
				ch := fmt.Sprintf("room:%d:%d", p, (int(n)*perBatch+i)%chans)
				off := n*int64(perBatch) + int64(i)
				bt.Messages = append(bt.Messages, store.Message{ID: fmt.Sprintf("%d-%d", p, off), Channel: ch,
					Seq: uint64(off + 1), Sender: "u", Data: data, PublishedAt: now, Partition: int32(p), Offset: off})
				bt.Heads = append(bt.Heads, store.Head{Channel: ch, Partition: int32(p), Epoch: "e", LastSeq: uint64(off + 1), Offset: off})
			}
			if err := s.WriteBatch(ctx, bt); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "msgs/s")
}
