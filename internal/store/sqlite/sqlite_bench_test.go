package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// BenchmarkWriteBatchesChat is the controller's store writer under the chat
// load of make compare's chat-1k (1,000 msg/s over 1,000 channels, 12
// partitions): one op is one WriteBatches call of what one flush holds —
// at 1,000 msg/s a flush interval of n ms holds n messages, so flush=20ms
// (the default batch interval) is 20 messages, flush=1000ms 1,000 — on
// random channels, one batch per partition holding its share with its
// heads and checkpoint, into a database already holding 100 messages per
// channel (so the pages a message lands on are spread over a file larger
// than SQLite's default page cache, as after a few minutes of chat).
// Reported per message.
func BenchmarkWriteBatchesChat(b *testing.B) {
	for _, perCall := range []int{20, 100, 1000} {
		b.Run(fmt.Sprintf("flush=%dms", perCall), func(b *testing.B) { benchWriteBatchesChat(b, perCall) })
	}
}

func benchWriteBatchesChat(b *testing.B, perCall int) {
	const (
		parts    = 12
		channels = 1000
		preload  = 100
	)
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "chat.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := []byte(`{"text":"hello, this is a typical short chat message with a bit of text","mentions":[]}`)
	info := []byte(`{"name":"Ann"}`)
	now := time.Now()
	name := func(ch int) string { return fmt.Sprintf("room:%d", ch) }
	partOf := func(ch int) int32 { return int32(ch % parts) }
	seqs := make([]uint64, channels)
	var offsets [parts]int64
	msg := func(ch int) store.Message {
		p := partOf(ch)
		seqs[ch]++
		off := offsets[p]
		offsets[p]++
		return store.Message{ID: fmt.Sprintf("01J%011d%012d", p, off), Channel: name(ch), Seq: seqs[ch],
			Sender: "user-1", Info: info, Data: data, PublishedAt: now, Partition: p, Offset: off}
	}
	// batches turns messages into one batch per partition with heads and
	// checkpoint, as the controller's batch writers hand them over.
	batches := func(msgs []store.Message) []store.Batch {
		var out []store.Batch
		idx := map[int32]int{}
		for _, m := range msgs {
			i, ok := idx[m.Partition]
			if !ok {
				i = len(out)
				idx[m.Partition] = i
				out = append(out, store.Batch{Partition: m.Partition})
			}
			bt := &out[i]
			bt.Messages = append(bt.Messages, m)
			bt.Heads = append(bt.Heads, store.Head{Channel: m.Channel, Partition: m.Partition, Epoch: "e", LastSeq: m.Seq, Offset: m.Offset})
			bt.NextOffset = m.Offset + 1
		}
		return out
	}
	for round := 0; round < preload; round++ {
		msgs := make([]store.Message, 0, channels)
		for ch := 0; ch < channels; ch++ {
			msgs = append(msgs, msg(ch))
		}
		if errs := s.WriteBatches(ctx, batches(msgs)); errors.Join(errs...) != nil {
			b.Fatal(errors.Join(errs...))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	calls := make([][]store.Batch, b.N)
	for i := range calls {
		msgs := make([]store.Message, 0, perCall)
		for j := 0; j < perCall; j++ {
			msgs = append(msgs, msg(rng.IntN(channels)))
		}
		calls[i] = batches(msgs)
	}
	b.ReportAllocs()
	r0, w0, ioOK := syscallsIO()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if errs := s.WriteBatches(ctx, calls[i]); errors.Join(errs...) != nil {
			b.Fatal(errors.Join(errs...))
		}
	}
	b.StopTimer()
	msgs := float64(b.N * perCall)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/msgs, "µs/msg")
	// System calls are most of what a write costs on the project's
	// virtual machines, and unlike time they do not drift from run to run.
	if r1, w1, ok := syscallsIO(); ok && ioOK {
		b.ReportMetric(float64(r1-r0)/msgs, "reads/msg")
		b.ReportMetric(float64(w1-w0)/msgs, "writes/msg")
	}
}

// syscallsIO returns the process's read and write system calls so far
// (syscr, syscw of /proc/self/io); ok is false where that file is missing.
func syscallsIO() (reads, writes int64, ok bool) {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch {
		case err != nil:
		case k == "syscr":
			reads = n
		case k == "syscw":
			writes = n
		}
	}
	return reads, writes, true
}
