package controller

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/memstore"
	"github.com/herald-chat/herald/internal/store/sqlite"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Batch writer vs raw bulk insert on SQLite.
//
// Every variant persists the same messages: batches of 1,000 over 50
// channels of one partition, as the fetch loop hands them over (chunks of
// 100 messages, one poll each, with the heads of the channels they touch).

const (
	wbBatch    = 1000
	wbChunk    = 100
	wbChannels = 50
)

var wbData = []byte(`{"text":"hello, this is a typical short chat message with a bit of text","mentions":[]}`)

// wbChunks builds n batches' worth of chunks, continuing seqs and offsets.
func wbChunks(n int) []chunk {
	now := time.Now()
	seqs := make([]uint64, wbChannels)
	var out []chunk
	off := int64(0)
	for range n * wbBatch / wbChunk {
		c := chunk{at: now}
		idx := map[string]int{}
		for range wbChunk {
			chn := int(off % wbChannels)
			ch := "room:" + strconv.Itoa(chn)
			seqs[chn]++
			c.msgs = append(c.msgs, store.Message{
				ID: fmt.Sprintf("01J%023d", off), Channel: ch, Seq: seqs[chn], Sender: "user-1",
				Info: []byte(`{"name":"Ann"}`), Data: wbData, PublishedAt: now, Partition: 0, Offset: off,
			})
			h := store.Head{Channel: ch, Partition: 0, Epoch: "e", LastSeq: seqs[chn], Offset: off}
			if i, ok := idx[ch]; ok {
				c.heads[i] = h
			} else {
				idx[ch] = len(c.heads)
				c.heads = append(c.heads, h)
			}
			off++
		}
		c.next = off
		out = append(out, c)
	}
	return out
}

func sqliteDSN(path string) string {
	// The pragmas of internal/store/sqlite's writer connection.
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// BenchmarkBatchWriterSQLite compares the controller's batch writer path
// (chunks handed over by the fetch loop, merged into 1,000-message batches,
// store.WriteBatch with heads and checkpoint) with raw bulk inserts of the
// same rows into the same SQLite schema: one transaction per 1,000 rows,
// either a prepared single-row INSERT (the baseline of
// internal/store/sqlite's BenchmarkRawInsert) or 64-row multi-value INSERTs.
// Compare the msgs/s of the sub-benchmarks.
func BenchmarkBatchWriterSQLite(b *testing.B) {
	ctx := context.Background()
	openStore := func(b *testing.B) (*sqlite.Store, string) {
		path := filepath.Join(b.TempDir(), "bench.db")
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st, path
	}
	report := func(b *testing.B, msgs int) {
		b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	}

	rawInsert := func(b *testing.B, rows int) {
		_, path := openStore(b) // creates the schema
		db, err := sql.Open("sqlite", sqliteDSN(path))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		var q strings.Builder
		q.WriteString(`INSERT INTO messages (channel, seq, id, sender, info, data, client_msg_id, published_at_ms, "partition", "offset") VALUES `)
		for i := range rows {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?,?,?,?,?,?,?,?,?)")
		}
		stmt, err := db.PrepareContext(ctx, q.String())
		if err != nil {
			b.Fatal(err)
		}
		defer stmt.Close()
		chunks := wbChunks(b.N)
		args := make([]any, 0, 10*rows)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			ins := tx.StmtContext(ctx, stmt)
			var msgs []store.Message
			for _, c := range chunks[i*wbBatch/wbChunk : (i+1)*wbBatch/wbChunk] {
				msgs = append(msgs, c.msgs...)
			}
			for len(msgs) > 0 {
				args = args[:0]
				for _, m := range msgs[:rows] {
					args = append(args, m.Channel, int64(m.Seq), m.ID, m.Sender, m.Info, m.Data,
						m.ClientMsgID, m.PublishedAt.UnixMilli(), int64(m.Partition), m.Offset)
				}
				if _, err := ins.ExecContext(ctx, args...); err != nil {
					b.Fatal(err)
				}
				msgs = msgs[rows:]
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		report(b, b.N*wbBatch)
	}

	b.Run("raw-insert-1row", func(b *testing.B) { rawInsert(b, 1) })
	b.Run("raw-insert-40rows", func(b *testing.B) { rawInsert(b, 40) }) // 40 divides 1,000

	b.Run("store-WriteBatch", func(b *testing.B) {
		st, _ := openStore(b)
		chunks := wbChunks(b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			batch := store.Batch{Partition: 0}
			heads := map[string]store.Head{}
			for _, c := range chunks[i*wbBatch/wbChunk : (i+1)*wbBatch/wbChunk] {
				batch.Messages = append(batch.Messages, c.msgs...)
				for _, h := range c.heads {
					heads[h.Channel] = h
				}
				batch.NextOffset = c.next
			}
			for _, h := range heads {
				batch.Heads = append(batch.Heads, h)
			}
			if err := st.WriteBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		report(b, b.N*wbBatch)
	})

	b.Run("batch-writer", func(b *testing.B) {
		st, _ := openStore(b)
		m, err := newMetrics(nil)
		if err != nil {
			b.Fatal(err)
		}
		cfg := testConfig(nil, 1, "bench")
		cfg.BatchMessages, cfg.BatchInterval, cfg.MaxBacklog = wbBatch, 20*time.Millisecond, 1<<30
		s := &Server{cfg: cfg, store: st, log: testLogger(b), m: m}
		s.sw = newStoreWriter(s)
		chunks := wbChunks(b.N)
		w := newBatchWriter(s, s.sw, 0)
		b.ReportAllocs()
		b.ResetTimer()
		go s.sw.run()
		for _, c := range chunks {
			w.add(c)
		}
		for w.unpersisted() > 0 {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		w.close(time.Second, true)
		s.sw.stop()
		report(b, b.N*wbBatch)
		if ps, err := st.LoadPartition(ctx, 0); err != nil || ps.NextOffset != int64(b.N*wbBatch) {
			b.Fatalf("checkpoint %d (%v), want %d", ps.NextOffset, err, b.N*wbBatch)
		}
	})
}

// streamCounter is a relay stream that counts the publications it gets and
// times the first and the last.
type streamCounter struct {
	n           atomic.Int64
	first, last atomic.Int64 // unix nanos
	onPub       func(p *heraldv1.Publication, now time.Time)
}

func openCounter(tb testing.TB, addr string, channels []string, onPub func(*heraldv1.Publication, time.Time)) *streamCounter {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	st, err := dialController(tb, addr).Stream(ctx, grpc.WaitForReady(true))
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Hello{Hello: &heraldv1.Hello{RelayId: "bench"}}}); err != nil {
		tb.Fatal(err)
	}
	if err := st.Send(&heraldv1.RelayMessage{Kind: &heraldv1.RelayMessage_Interest{Interest: &heraldv1.InterestDelta{Add: channels}}}); err != nil {
		tb.Fatal(err)
	}
	c := &streamCounter{onPub: onPub}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			pubs := m.GetBatch().GetPublications()
			if len(pubs) == 0 {
				continue
			}
			now := time.Now()
			c.first.CompareAndSwap(0, now.UnixNano())
			if c.onPub != nil {
				for _, p := range pubs {
					c.onPub(p, now)
				}
			}
			c.n.Add(int64(len(pubs)))
			c.last.Store(now.UnixNano())
		}
	}()
	return c
}

// BenchmarkConsumeToStream: N records are produced to kfake first; then a
// controller starts (memstore, so persistence is not the limit) with a relay
// stream interested in every channel, and the benchmark waits until the
// stream received all N. msgs/s is measured from the first to the last
// publication received (the group join is excluded); wall_ms includes it.
func BenchmarkConsumeToStream(b *testing.B) {
	const (
		parts    = 4
		channels = 1000
		records  = 100_000
	)
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprintf("chat:room-%04d", i)
	}
	var streamed time.Duration
	var wall time.Duration
	for i := range b.N {
		b.StopTimer()
		brokers := startKafka(b)
		if err := EnsureTopic(context.Background(), brokers, testTopic, parts); err != nil {
			b.Fatal(err)
		}
		now := time.Now().UnixMilli()
		produceRaw(b, brokers, parts, func(j int) (string, []byte) {
			ch := names[j%channels]
			v, _ := proto.Marshal(&heraldv1.Message{Id: fmt.Sprintf("01J%023d", j), Channel: ch, Sender: "user-1",
				Data: wbData, PublishedAt: now})
			return ch, v
		}, records)
		cfg := testConfig(brokers, parts, fmt.Sprintf("bench-%d", i))
		cfg.BatchMessages, cfg.BatchInterval = 1000, 20*time.Millisecond
		s, err := New(cfg, memstore.New(), testLogger(b), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- s.Run(ctx) }()
		c := openCounter(b, s.Addr(), names, nil)
		deadline := time.Now().Add(2 * time.Minute)
		for c.n.Load() < records {
			if time.Now().After(deadline) {
				b.Fatalf("stream received %d of %d publications", c.n.Load(), records)
			}
			time.Sleep(time.Millisecond)
		}
		wall += time.Since(start)
		streamed += time.Duration(c.last.Load() - c.first.Load())
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*records)/streamed.Seconds(), "msgs/s")
	b.ReportMetric(float64(wall.Milliseconds())/float64(b.N), "wall_ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkStreamLatency10k produces at a fixed 10,000 msgs/s for 5 s to a
// running controller (SQLite store, persistence on) with one relay stream
// interested in every channel, each message carrying its produce time, and
// reports the latency from the produce call to the stream's receipt
// (Kafka produce + fetch + sequencing + routing + gRPC), which bounds the
// consume-to-stream latency from above. Run with -benchtime=1x.
func BenchmarkStreamLatency10k(b *testing.B) {
	const (
		parts    = 4
		channels = 1000
		rate     = 10_000
		duration = 5 * time.Second
		tick     = time.Millisecond
	)
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprintf("chat:room-%04d", i)
	}
	brokers := startKafka(b)
	st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "herald.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cfg := testConfig(brokers, parts, "bench")
	cfg.BatchMessages, cfg.BatchInterval = 1000, 20*time.Millisecond
	c := startController(b, cfg, st)
	waitOwns(b, c.Server, parts)

	var mu sync.Mutex
	var lat []time.Duration
	counter := openCounter(b, c.Addr(), names, func(p *heraldv1.Publication, now time.Time) {
		d := p.Message.GetData() // {"t":<unix nanos>}
		t, err := strconv.ParseInt(string(d[5:len(d)-1]), 10, 64)
		if err != nil {
			return
		}
		mu.Lock()
		lat = append(lat, now.Sub(time.Unix(0, t)))
		mu.Unlock()
	})
	time.Sleep(200 * time.Millisecond) // interest registered

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(testTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var produceErr atomic.Value
	total := 0
	for range b.N {
		b.ResetTimer()
		start := time.Now()
		t := time.NewTicker(tick)
		for sent := 0; time.Since(start) < duration; {
			<-t.C
			want := int(time.Since(start) * rate / time.Second)
			for ; sent < want; sent++ {
				ch := names[sent%channels]
				m := &heraldv1.Message{Id: fmt.Sprintf("01J%023d", total), Channel: ch, Sender: "user-1",
					Data: []byte(`{"t":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}`)}
				v, _ := proto.Marshal(m)
				cl.Produce(context.Background(), &kgo.Record{Key: []byte(ch), Value: v, Partition: partition.For(ch, parts)},
					func(_ *kgo.Record, err error) {
						if err != nil {
							produceErr.Store(err)
						}
					})
				total++
			}
		}
		t.Stop()
		if err := cl.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 30*time.Second, "every publication on the stream", func() bool { return counter.n.Load() >= int64(total) })
		b.StopTimer()
	}
	if err, _ := produceErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(pct(0.999), "p99.9_ms")
	b.ReportMetric(pct(1), "max_ms")
	b.ReportMetric(float64(total)/duration.Seconds()/float64(b.N), "produced_msgs/s")
	b.ReportMetric(0, "ns/op")
}
