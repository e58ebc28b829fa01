// Package storetest is the conformance suite every store.Store
// implementation passes: call Run from the implementation's tests.
//
// The suite keeps its data sets small (tens of messages) so it also runs
// against slow engines such as FerretDB. It is safe to run with -race; the
// Concurrency case exercises concurrent writers on different partitions and
// concurrent readers.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/store"
)

// CrashWriter is the test hook a store implements so the suite can simulate
// a crash between writing a batch's messages and heads and writing its
// checkpoint: WriteMessagesAndHeadsOnly performs WriteBatch's first steps
// and skips the checkpoint.
type CrashWriter interface {
	WriteMessagesAndHeadsOnly(ctx context.Context, b store.Batch) error
}

// Run runs the conformance suite. open must return a fresh, empty store for
// every call and arrange (t.Cleanup) for it to be closed.
func Run(t *testing.T, open func(t testing.TB) store.Store) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"EmptyPartition", testEmptyPartition},
		{"RoundTrip", testRoundTrip},
		{"IdempotentSameBatch", testIdempotentSameBatch},
		{"IdempotentOverlappingBatches", testOverlappingBatches},
		{"HeadsForwardOnly", testHeadsForwardOnly},
		{"Checkpoint", testCheckpoint},
		{"LoadPartitionAsOfCheckpoint", testCrashBeforeCheckpoint},
		{"MessagesRange", testMessagesRange},
		{"ChannelNotFound", testChannelNotFound},
		{"ChannelsPagination", testChannelsPagination},
		{"ArchivedThroughForwardOnly", testArchivedThrough},
		{"Purge", testPurge},
		{"Ping", testPing},
		{"Concurrency", testConcurrency},
		{"Lease", testLease},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseConcurrentAcquire", testLeaseConcurrent},
	}
	if _, ok := open(t).(store.BatchesWriter); ok {
		cases = append(cases, struct {
			name string
			fn   func(t *testing.T, s store.Store)
		}{"WriteBatches", testWriteBatches})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, open(t))
		})
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var baseTime = time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.UTC)

// msg builds a message of channel with seq at the given Kafka position.
func msg(channel string, seq uint64, partition int32, offset int64) store.Message {
	return store.Message{
		ID:          fmt.Sprintf("id-%s-%d", channel, seq),
		Channel:     channel,
		Seq:         seq,
		Sender:      "user-" + channel,
		Info:        []byte(`{"name": "Ann",  "n":1}`),
		Data:        []byte(fmt.Sprintf(`{"text": "héllo \u00e9 %d" , "x":[1, 2.50]}`, seq)),
		ClientMsgID: fmt.Sprintf("c-%d", seq),
		PublishedAt: baseTime.Add(time.Duration(seq) * time.Second),
		Partition:   partition,
		Offset:      offset,
	}
}

// epochOf is the epoch the suite uses for a channel.
func epochOf(channel string) string { return "ep-" + channel }

// batch builds a batch from msgs: heads are the max seq per channel and
// NextOffset is the max offset + 1.
func batch(partition int32, msgs ...store.Message) store.Batch {
	b := store.Batch{Partition: partition, Messages: msgs}
	idx := map[string]int{}
	for _, m := range msgs {
		if m.Offset+1 > b.NextOffset {
			b.NextOffset = m.Offset + 1
		}
		i, ok := idx[m.Channel]
		if !ok {
			idx[m.Channel] = len(b.Heads)
			b.Heads = append(b.Heads, store.Head{Channel: m.Channel, Partition: partition, Epoch: epochOf(m.Channel), LastSeq: m.Seq, Offset: m.Offset})
			continue
		}
		if m.Seq > b.Heads[i].LastSeq {
			b.Heads[i].LastSeq, b.Heads[i].Offset = m.Seq, m.Offset
		}
	}
	return b
}

// seqMsgs returns messages seq from..to of channel, at offsets base+seq-from...
func seqMsgs(channel string, from, to uint64, partition int32, base int64) []store.Message {
	var out []store.Message
	for s := from; s <= to; s++ {
		out = append(out, msg(channel, s, partition, base+int64(s-from)))
	}
	return out
}

func mustWrite(t testing.TB, s store.Store, b store.Batch) {
	t.Helper()
	if err := s.WriteBatch(ctxFor(t), b); err != nil {
		t.Fatalf("WriteBatch(partition %d, next %d): %v", b.Partition, b.NextOffset, err)
	}
}

func allMessages(t testing.TB, s store.Store, channel string) []store.Message {
	t.Helper()
	ms, err := s.Messages(ctxFor(t), store.Range{Channel: channel, From: 1, To: math.MaxUint64})
	if err != nil {
		t.Fatalf("Messages(%s): %v", channel, err)
	}
	return ms
}

func seqs(ms []store.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	if from <= to {
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
	} else {
		for s := from; s >= to; s-- {
			out = append(out, s)
		}
	}
	return out
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func wantSeqs(t testing.TB, what string, got []store.Message, want []uint64) {
	t.Helper()
	if g := seqs(got); !equalSeqs(g, want) {
		t.Fatalf("%s: seqs %v, want %v", what, g, want)
	}
}

func mustChannel(t testing.TB, s store.Store, name string) store.Channel {
	t.Helper()
	c, err := s.Channel(ctxFor(t), name)
	if err != nil {
		t.Fatalf("Channel(%s): %v", name, err)
	}
	return c
}

func mustLoad(t testing.TB, s store.Store, p int32) store.PartitionState {
	t.Helper()
	st, err := s.LoadPartition(ctxFor(t), p)
	if err != nil {
		t.Fatalf("LoadPartition(%d): %v", p, err)
	}
	if st.Partition != p {
		t.Fatalf("LoadPartition(%d).Partition = %d", p, st.Partition)
	}
	return st
}

func wantMessage(t testing.TB, got, want store.Message) {
	t.Helper()
	if got.ID != want.ID || got.Channel != want.Channel || got.Seq != want.Seq ||
		got.Sender != want.Sender || got.ClientMsgID != want.ClientMsgID ||
		got.Partition != want.Partition || got.Offset != want.Offset {
		t.Fatalf("message mismatch:\n got %+v\nwant %+v", got, want)
	}
	if (got.Info == nil) != (want.Info == nil) || !bytes.Equal(got.Info, want.Info) {
		t.Fatalf("seq %d Info = %q (nil=%v), want %q (nil=%v)", want.Seq, got.Info, got.Info == nil, want.Info, want.Info == nil)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("seq %d Data = %q, want %q", want.Seq, got.Data, want.Data)
	}
	if w := want.PublishedAt.Truncate(time.Millisecond); !got.PublishedAt.Equal(w) {
		t.Fatalf("seq %d PublishedAt = %v, want %v", want.Seq, got.PublishedAt, w)
	}
}

func testEmptyPartition(t *testing.T, s store.Store) {
	st := mustLoad(t, s, 7)
	if st.NextOffset != 0 || len(st.Heads) != 0 {
		t.Fatalf("never-seen partition: NextOffset %d, heads %v; want 0 and none", st.NextOffset, st.Heads)
	}
	if ms := allMessages(t, s, "nope"); len(ms) != 0 {
		t.Fatalf("Messages of unknown channel: %d messages", len(ms))
	}
	cs, err := s.Channels(ctxFor(t), "", 10)
	if err != nil || len(cs) != 0 {
		t.Fatalf("Channels on empty store: %v, %v", cs, err)
	}
}

func testRoundTrip(t *testing.T, s store.Store) {
	m1 := msg("room:1", 1, 3, 1<<40)
	m2 := msg("room:1", 2, 3, 1<<40+1)
	m2.Info = nil
	m2.ClientMsgID = ""
	m2.Data = []byte(`"just a string with \"quotes\" and \n"`)
	m3 := msg("room:1", 3, 3, 1<<40+2)
	m3.PublishedAt = time.Date(2024, 12, 31, 23, 59, 59, 999_999_999, time.FixedZone("X", 3600))
	m3.Info = []byte(`null`)
	b := batch(3, m1, m2, m3)
	mustWrite(t, s, b)

	got := allMessages(t, s, "room:1")
	if len(got) != 3 {
		t.Fatalf("got %d messages, want 3", len(got))
	}
	for i, want := range []store.Message{m1, m2, m3} {
		wantMessage(t, got[i], want)
	}
	if got[1].Info != nil {
		t.Fatalf("nil Info came back as %q", got[1].Info)
	}

	c := mustChannel(t, s, "room:1")
	want := store.Channel{Name: "room:1", Partition: 3, Epoch: epochOf("room:1"), LastSeq: 3}
	if c != want {
		t.Fatalf("Channel = %+v, want %+v", c, want)
	}
	st := mustLoad(t, s, 3)
	if st.NextOffset != 1<<40+3 {
		t.Fatalf("NextOffset = %d, want %d", st.NextOffset, int64(1<<40+3))
	}
	h := st.Heads["room:1"]
	wantH := store.Head{Channel: "room:1", Partition: 3, Epoch: epochOf("room:1"), LastSeq: 3, Offset: 1<<40 + 2}
	if h != wantH || len(st.Heads) != 1 {
		t.Fatalf("heads = %+v, want only %+v", st.Heads, wantH)
	}
}

func testIdempotentSameBatch(t *testing.T, s store.Store) {
	b := batch(0, append(seqMsgs("a", 1, 4, 0, 0), seqMsgs("b", 1, 3, 0, 4)...)...)
	mustWrite(t, s, b)
	// A retry with different payloads must not overwrite the first write.
	b2 := batch(0, append(seqMsgs("a", 1, 4, 0, 0), seqMsgs("b", 1, 3, 0, 4)...)...)
	for i := range b2.Messages {
		b2.Messages[i].Data = []byte(`{"retry":true}`)
	}
	mustWrite(t, s, b2)
	mustWrite(t, s, b)

	a := allMessages(t, s, "a")
	wantSeqs(t, "a", a, seqRange(1, 4))
	for i, m := range a {
		wantMessage(t, m, b.Messages[i])
	}
	wantSeqs(t, "b", allMessages(t, s, "b"), seqRange(1, 3))
	if c := mustChannel(t, s, "a"); c.LastSeq != 4 {
		t.Fatalf("a LastSeq = %d, want 4", c.LastSeq)
	}
	st := mustLoad(t, s, 0)
	if st.NextOffset != 7 || st.Heads["a"].LastSeq != 4 || st.Heads["b"].LastSeq != 3 {
		t.Fatalf("state after retries = %+v", st)
	}
}

func testOverlappingBatches(t *testing.T, s store.Store) {
	mustWrite(t, s, batch(1, seqMsgs("ch", 1, 5, 1, 100)...))
	mustWrite(t, s, batch(1, seqMsgs("ch", 3, 8, 1, 102)...))
	got := allMessages(t, s, "ch")
	wantSeqs(t, "ch", got, seqRange(1, 8))
	for _, m := range got {
		if m.Offset != 100+int64(m.Seq-1) {
			t.Fatalf("seq %d offset %d", m.Seq, m.Offset)
		}
	}
	if c := mustChannel(t, s, "ch"); c.LastSeq != 8 {
		t.Fatalf("LastSeq = %d, want 8", c.LastSeq)
	}
	st := mustLoad(t, s, 1)
	if st.NextOffset != 108 || st.Heads["ch"].LastSeq != 8 || st.Heads["ch"].Offset != 107 {
		t.Fatalf("state = %+v", st)
	}
}

func testHeadsForwardOnly(t *testing.T, s store.Store) {
	old := batch(2, seqMsgs("h", 1, 3, 2, 0)...)
	newer := batch(2, seqMsgs("h", 4, 6, 2, 3)...)
	mustWrite(t, s, old)
	mustWrite(t, s, newer)
	// A late retry of the older batch, with another epoch: nothing moves back
	// and the epoch fixed at first sight stays.
	old.Heads[0].Epoch = "other-epoch"
	mustWrite(t, s, old)
	c := mustChannel(t, s, "h")
	if c.LastSeq != 6 || c.Epoch != epochOf("h") {
		t.Fatalf("Channel = %+v, want LastSeq 6 epoch %s", c, epochOf("h"))
	}
	st := mustLoad(t, s, 2)
	h := st.Heads["h"]
	if st.NextOffset != 6 || h.LastSeq != 6 || h.Offset != 5 || h.Epoch != epochOf("h") {
		t.Fatalf("state = %+v (the checkpoint must not move back either)", st)
	}
}

func testCheckpoint(t *testing.T, s store.Store) {
	mustWrite(t, s, batch(4, seqMsgs("p4", 1, 2, 4, 10)...))
	mustWrite(t, s, batch(5, seqMsgs("p5", 1, 3, 5, 20)...))
	// A batch of only a checkpoint (e.g. records that were skipped).
	mustWrite(t, s, store.Batch{Partition: 6, NextOffset: 42})
	for _, c := range []struct {
		p     int32
		next  int64
		heads map[string]uint64
	}{
		{4, 12, map[string]uint64{"p4": 2}},
		{5, 23, map[string]uint64{"p5": 3}},
		{6, 42, map[string]uint64{}},
		{7, 0, map[string]uint64{}},
	} {
		st := mustLoad(t, s, c.p)
		if st.NextOffset != c.next || len(st.Heads) != len(c.heads) {
			t.Fatalf("partition %d: %+v, want next %d heads %v", c.p, st, c.next, c.heads)
		}
		for ch, seq := range c.heads {
			h := st.Heads[ch]
			if h.LastSeq != seq || h.Channel != ch || h.Partition != c.p || h.Epoch != epochOf(ch) {
				t.Fatalf("partition %d head %s = %+v, want seq %d", c.p, ch, h, seq)
			}
		}
	}
	mustWrite(t, s, batch(4, seqMsgs("p4", 3, 3, 4, 12)...))
	if st := mustLoad(t, s, 4); st.NextOffset != 13 || st.Heads["p4"].LastSeq != 3 {
		t.Fatalf("partition 4 after second batch: %+v", st)
	}
}

func testCrashBeforeCheckpoint(t *testing.T, s store.Store) {
	cw, ok := s.(CrashWriter)
	if !ok {
		t.Fatalf("%T does not implement storetest.CrashWriter", s)
	}
	const p = 9
	// Checkpointed batch: offsets 0..4.
	first := batch(p, msg("a", 1, p, 0), msg("b", 1, p, 1), msg("a", 2, p, 2), msg("b", 2, p, 3), msg("a", 3, p, 4))
	mustWrite(t, s, first)
	// Crashed batch: offsets 5..9, messages and heads written, checkpoint not.
	crashed := batch(p, msg("a", 4, p, 5), msg("c", 1, p, 6), msg("a", 5, p, 7), msg("c", 2, p, 8), msg("a", 6, p, 9))
	if err := cw.WriteMessagesAndHeadsOnly(ctxFor(t), crashed); err != nil {
		t.Fatalf("WriteMessagesAndHeadsOnly: %v", err)
	}

	check := func(what string, wantA uint64, wantAOffset int64) {
		t.Helper()
		st := mustLoad(t, s, p)
		if st.NextOffset != 5 {
			t.Fatalf("%s: NextOffset = %d, want 5", what, st.NextOffset)
		}
		a, b := st.Heads["a"], st.Heads["b"]
		if a.LastSeq != wantA || a.Epoch != epochOf("a") || a.Partition != p || a.Channel != "a" {
			t.Fatalf("%s: head a = %+v, want LastSeq %d (as of the checkpoint)", what, a, wantA)
		}
		if wantAOffset >= 0 && a.Offset != wantAOffset {
			t.Fatalf("%s: head a offset = %d, want %d", what, a.Offset, wantAOffset)
		}
		if b.LastSeq != 2 || b.Offset != 3 || b.Epoch != epochOf("b") {
			t.Fatalf("%s: head b = %+v, want LastSeq 2 offset 3", what, b)
		}
		if c, ok := st.Heads["c"]; ok && (c.LastSeq != 0 || c.Epoch != epochOf("c")) {
			t.Fatalf("%s: head c = %+v, want absent or LastSeq 0 with epoch %s", what, c, epochOf("c"))
		}
		if len(st.Heads) > 3 {
			t.Fatalf("%s: unexpected heads %v", what, st.Heads)
		}
	}
	check("after crash", 3, 4)

	// Archived-through counts as a lower bound of the head even when the
	// messages are gone.
	if err := s.SetArchivedThrough(ctxFor(t), "a", 3); err != nil {
		t.Fatalf("SetArchivedThrough: %v", err)
	}
	if n, err := s.Purge(ctxFor(t), "a", 3); err != nil || n != 3 {
		t.Fatalf("Purge(a, 3) = %d, %v; want 3", n, err)
	}
	check("after purge", 3, -1)

	// The new owner re-consumes from offset 5 and rewrites the same batch.
	mustWrite(t, s, crashed)
	st := mustLoad(t, s, p)
	if st.NextOffset != 10 || st.Heads["a"].LastSeq != 6 || st.Heads["a"].Offset != 9 ||
		st.Heads["b"].LastSeq != 2 || st.Heads["c"].LastSeq != 2 || st.Heads["c"].Epoch != epochOf("c") {
		t.Fatalf("after the retry: %+v", st)
	}
	wantSeqs(t, "a", allMessages(t, s, "a"), seqRange(4, 6))
	wantSeqs(t, "c", allMessages(t, s, "c"), seqRange(1, 2))
}

func testMessagesRange(t *testing.T, s store.Store) {
	mustWrite(t, s, batch(0, append(seqMsgs("r", 1, 20, 0, 0), seqMsgs("r2", 1, 3, 0, 20)...)...))
	ctx := ctxFor(t)
	for _, c := range []struct {
		name string
		r    store.Range
		want []uint64
	}{
		{"all asc", store.Range{From: 1, To: 20}, seqRange(1, 20)},
		{"all desc", store.Range{From: 1, To: 20, Desc: true}, seqRange(20, 1)},
		{"bounds asc", store.Range{From: 5, To: 10}, seqRange(5, 10)},
		{"bounds desc", store.Range{From: 5, To: 10, Desc: true}, seqRange(10, 5)},
		{"limit asc", store.Range{From: 5, To: 10, Limit: 3}, seqRange(5, 7)},
		{"limit desc", store.Range{From: 5, To: 10, Limit: 3, Desc: true}, seqRange(10, 8)},
		{"limit above count", store.Range{From: 18, To: 30, Limit: 10}, seqRange(18, 20)},
		{"single", store.Range{From: 7, To: 7}, []uint64{7}},
		{"To max uint64", store.Range{From: 19, To: math.MaxUint64}, seqRange(19, 20)},
		{"To 0 means unbounded", store.Range{From: 19}, seqRange(19, 20)},
		{"desc unbounded limit", store.Range{From: 1, Limit: 2, Desc: true}, seqRange(20, 19)},
		{"From 0 like 1", store.Range{From: 0, To: 2}, seqRange(1, 2)},
		{"empty beyond", store.Range{From: 21, To: 30}, nil},
		{"From above To", store.Range{From: 10, To: 5}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.r
			r.Channel = "r"
			got, err := s.Messages(ctx, r)
			if err != nil {
				t.Fatalf("Messages(%+v): %v", r, err)
			}
			wantSeqs(t, c.name, got, c.want)
			for _, m := range got {
				if m.Channel != "r" {
					t.Fatalf("message of channel %q", m.Channel)
				}
			}
		})
	}
	got, err := s.Messages(ctx, store.Range{Channel: "unknown", From: 1, To: 10})
	if err != nil || len(got) != 0 {
		t.Fatalf("unknown channel: %v, %v; want empty, nil", got, err)
	}
}

func testChannelNotFound(t *testing.T, s store.Store) {
	_, err := s.Channel(ctxFor(t), "ghost")
	if !store.IsNotFound(err) {
		t.Fatalf("Channel(ghost) error = %v, want ErrNotFound", err)
	}
	if err := s.SetArchivedThrough(ctxFor(t), "ghost", 3); !store.IsNotFound(err) {
		t.Fatalf("SetArchivedThrough(ghost) error = %v, want ErrNotFound", err)
	}
	if n, err := s.Purge(ctxFor(t), "ghost", 3); err != nil || n != 0 {
		t.Fatalf("Purge(ghost) = %d, %v; want 0, nil", n, err)
	}
	mustWrite(t, s, batch(0, msg("here", 1, 0, 0)))
	if _, err := s.Channel(ctxFor(t), "here"); err != nil {
		t.Fatalf("Channel(here): %v", err)
	}
	if _, err := s.Channel(ctxFor(t), "her"); !store.IsNotFound(err) {
		t.Fatalf("Channel(her) error = %v, want ErrNotFound", err)
	}
}

func testChannelsPagination(t *testing.T, s store.Store) {
	names := []string{"chat:b", "chat:a", "news", "chat:c", "Alpha", "zeta"}
	var msgs []store.Message
	for i, n := range names {
		msgs = append(msgs, msg(n, 1, int32(i%2), int64(i)))
	}
	// Two partitions: write each partition's part.
	var p0, p1 []store.Message
	for _, m := range msgs {
		if m.Partition == 0 {
			p0 = append(p0, m)
		} else {
			p1 = append(p1, m)
		}
	}
	mustWrite(t, s, batch(0, p0...))
	mustWrite(t, s, batch(1, p1...))
	if err := s.SetArchivedThrough(ctxFor(t), "news", 1); err != nil {
		t.Fatal(err)
	}
	want := []string{"Alpha", "chat:a", "chat:b", "chat:c", "news", "zeta"}
	var got []string
	after := ""
	for page := 0; ; page++ {
		cs, err := s.Channels(ctxFor(t), after, 4)
		if err != nil {
			t.Fatalf("Channels(%q): %v", after, err)
		}
		if len(cs) > 4 {
			t.Fatalf("page of %d > limit 4", len(cs))
		}
		if len(cs) == 0 {
			break
		}
		for _, c := range cs {
			got = append(got, c.Name)
			if c.LastSeq != 1 || c.Epoch != epochOf(c.Name) {
				t.Fatalf("channel %+v", c)
			}
			if c.Name == "news" && c.ArchivedThrough != 1 {
				t.Fatalf("news ArchivedThrough = %d", c.ArchivedThrough)
			}
		}
		after = cs[len(cs)-1].Name
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pages = %v, want %v", got, want)
	}
	cs, err := s.Channels(ctxFor(t), "chat:a", 2)
	if err != nil || len(cs) != 2 || cs[0].Name != "chat:b" || cs[1].Name != "chat:c" {
		t.Fatalf("Channels(after chat:a, 2) = %v, %v", cs, err)
	}
	cs, err = s.Channels(ctxFor(t), "zeta", 2)
	if err != nil || len(cs) != 0 {
		t.Fatalf("Channels(after zeta) = %v, %v", cs, err)
	}
}

func testArchivedThrough(t *testing.T, s store.Store) {
	mustWrite(t, s, batch(0, seqMsgs("x", 1, 6, 0, 0)...))
	ctx := ctxFor(t)
	for _, c := range []struct{ set, want uint64 }{{4, 4}, {2, 4}, {4, 4}, {5, 5}, {0, 5}} {
		if err := s.SetArchivedThrough(ctx, "x", c.set); err != nil {
			t.Fatalf("SetArchivedThrough(%d): %v", c.set, err)
		}
		if got := mustChannel(t, s, "x"); got.ArchivedThrough != c.want || got.LastSeq != 6 {
			t.Fatalf("after set %d: %+v, want ArchivedThrough %d", c.set, got, c.want)
		}
	}
	// A later batch does not reset it.
	mustWrite(t, s, batch(0, seqMsgs("x", 7, 7, 0, 6)...))
	if got := mustChannel(t, s, "x"); got.ArchivedThrough != 5 || got.LastSeq != 7 {
		t.Fatalf("after batch: %+v", got)
	}
}

func testPurge(t *testing.T, s store.Store) {
	mustWrite(t, s, batch(0, append(seqMsgs("q", 1, 10, 0, 0), seqMsgs("other", 1, 3, 0, 10)...)...))
	ctx := ctxFor(t)
	purge := func(through uint64, want int64) {
		t.Helper()
		n, err := s.Purge(ctx, "q", through)
		if err != nil || n != want {
			t.Fatalf("Purge(q, %d) = %d, %v; want %d", through, n, err, want)
		}
	}
	purge(10, 0) // nothing archived yet
	wantSeqs(t, "q", allMessages(t, s, "q"), seqRange(1, 10))
	if err := s.SetArchivedThrough(ctx, "q", 4); err != nil {
		t.Fatal(err)
	}
	purge(2, 2)
	purge(10, 2) // capped at archived-through 4
	purge(10, 0) // idempotent
	purge(4, 0)
	wantSeqs(t, "q", allMessages(t, s, "q"), seqRange(5, 10))
	wantSeqs(t, "other", allMessages(t, s, "other"), seqRange(1, 3))
	if err := s.SetArchivedThrough(ctx, "q", 10); err != nil {
		t.Fatal(err)
	}
	purge(7, 3)
	got, err := s.Messages(ctx, store.Range{Channel: "q", From: 1, To: 20, Desc: true, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, "q after purge", got, []uint64{10, 9})
	if c := mustChannel(t, s, "q"); c.LastSeq != 10 {
		t.Fatalf("purge changed the head: %+v", c)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(ctxFor(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testConcurrency(t *testing.T, s store.Store) {
	const (
		partitions = 4
		batches    = 5
		perBatch   = 4
	)
	ctx := ctxFor(t)
	done := make(chan struct{})
	var writers, readers sync.WaitGroup
	errs := make(chan error, partitions+4)
	for p := int32(0); p < partitions; p++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			chans := []string{fmt.Sprintf("c%d-a", p), fmt.Sprintf("c%d-b", p)}
			var offset int64
			seq := map[string]uint64{}
			for i := 0; i < batches; i++ {
				var ms []store.Message
				for j := 0; j < perBatch; j++ {
					ch := chans[j%2]
					seq[ch]++
					ms = append(ms, msg(ch, seq[ch], p, offset))
					offset++
				}
				if err := s.WriteBatch(ctx, batch(p, ms...)); err != nil {
					errs <- fmt.Errorf("partition %d: %w", p, err)
					return
				}
			}
		}()
	}
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				p := int32(i % partitions)
				st, err := s.LoadPartition(ctx, p)
				if err == nil {
					for ch, h := range st.Heads {
						if h.LastSeq > uint64(st.NextOffset) {
							err = fmt.Errorf("head %s seq %d beyond checkpoint %d", ch, h.LastSeq, st.NextOffset)
						}
					}
				}
				if err == nil {
					var ms []store.Message
					ms, err = s.Messages(ctx, store.Range{Channel: fmt.Sprintf("c%d-a", p), From: 1, To: math.MaxUint64, Desc: true, Limit: 3})
					for k := 1; err == nil && k < len(ms); k++ {
						if ms[k].Seq >= ms[k-1].Seq {
							err = errors.New("Messages out of order")
						}
					}
				}
				if err == nil {
					_, err = s.Channels(ctx, "", 3)
				}
				if err == nil {
					_, err = s.Channel(ctx, fmt.Sprintf("c%d-b", p))
					if store.IsNotFound(err) {
						err = nil
					}
				}
				if err != nil {
					errs <- fmt.Errorf("reader: %w", err)
					return
				}
			}
		}()
	}
	writers.Wait()
	close(done)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	per := uint64(batches * perBatch / 2)
	for p := int32(0); p < partitions; p++ {
		st := mustLoad(t, s, p)
		if st.NextOffset != batches*perBatch || len(st.Heads) != 2 {
			t.Fatalf("partition %d: %+v", p, st)
		}
		for _, ch := range []string{fmt.Sprintf("c%d-a", p), fmt.Sprintf("c%d-b", p)} {
			if st.Heads[ch].LastSeq != per {
				t.Fatalf("partition %d head %s = %+v, want %d", p, ch, st.Heads[ch], per)
			}
			wantSeqs(t, ch, allMessages(t, s, ch), seqRange(1, per))
		}
	}
}

func acquire(t testing.TB, s store.Store, name, owner string, ttl time.Duration, want bool) store.Lease {
	t.Helper()
	l, ok, err := s.AcquireLease(ctxFor(t), name, owner, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", name, owner, err)
	}
	if ok != want || l.Name != name {
		t.Fatalf("AcquireLease(%s, %s) = %+v, %v; want acquired=%v", name, owner, l, ok, want)
	}
	return l
}

func testLease(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	before := time.Now()
	a := acquire(t, s, "run", "a", time.Minute, true)
	if a.Owner != "a" || a.Expires.Before(before.Add(time.Minute-time.Second)) || a.Expires.After(time.Now().Add(time.Minute+time.Second)) {
		t.Fatalf("lease %+v", a)
	}
	// Another owner is refused and told who holds it until when.
	if b := acquire(t, s, "run", "b", time.Minute, false); b.Owner != "a" || !b.Expires.Equal(a.Expires) {
		t.Fatalf("held lease reported as %+v, want %+v", b, a)
	}
	// Another name is independent.
	acquire(t, s, "other", "b", time.Minute, true)
	// Renewal by the holder moves the expiry.
	time.Sleep(5 * time.Millisecond)
	if a2 := acquire(t, s, "run", "a", 2*time.Minute, true); !a2.Expires.After(a.Expires) {
		t.Fatalf("renewal did not extend: %+v after %+v", a2, a)
	}
	// Releasing someone else's lease does nothing.
	if err := s.ReleaseLease(ctx, "run", "b"); err != nil {
		t.Fatal(err)
	}
	acquire(t, s, "run", "b", time.Minute, false)
	if err := s.ReleaseLease(ctx, "run", "a"); err != nil {
		t.Fatal(err)
	}
	acquire(t, s, "run", "b", time.Minute, true)
	acquire(t, s, "run", "a", time.Minute, false)
	for _, name := range []string{"run", "never"} { // twice, and unknown
		if err := s.ReleaseLease(ctx, name, "a"); err != nil {
			t.Fatalf("ReleaseLease(%s): %v", name, err)
		}
	}
	if _, _, err := s.AcquireLease(ctx, "run", "", time.Minute); err == nil {
		t.Error("AcquireLease with an empty owner succeeded")
	}
	if _, _, err := s.AcquireLease(ctx, "run", "c", 0); err == nil {
		t.Error("AcquireLease with ttl 0 succeeded")
	}
}

func testLeaseExpiry(t *testing.T, s store.Store) {
	acquire(t, s, "run", "a", 200*time.Millisecond, true)
	acquire(t, s, "run", "b", time.Minute, false)
	time.Sleep(300 * time.Millisecond)
	b := acquire(t, s, "run", "b", time.Minute, true)
	if b.Owner != "b" {
		t.Fatalf("lease after expiry %+v", b)
	}
	// The previous owner lost it: it can neither renew nor release it.
	acquire(t, s, "run", "a", time.Minute, false)
	if err := s.ReleaseLease(ctxFor(t), "run", "a"); err != nil {
		t.Fatal(err)
	}
	acquire(t, s, "run", "a", time.Minute, false)
}

func testLeaseConcurrent(t *testing.T, s store.Store) {
	const owners = 4
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	got := make([]bool, owners)
	errs := make([]error, owners)
	for i := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, got[i], errs[i] = s.AcquireLease(ctx, "race", fmt.Sprintf("o%d", i), time.Minute)
		}()
	}
	wg.Wait()
	winners := 0
	for i := range owners {
		if errs[i] != nil {
			t.Fatalf("owner %d: %v", i, errs[i])
		}
		if got[i] {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d owners acquired one lease concurrently", winners)
	}
}

// testWriteBatches (stores implementing store.BatchesWriter): the
// controller's store writer hands every partition's batch of a flush over
// in one call; each is stored whole with its heads and checkpoint, a
// replayed call changes nothing, and a call whose context ended before it
// started fails every batch and stores nothing.
func testWriteBatches(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	bw := s.(store.BatchesWriter)
	const parts = 12
	round := func(r int) []store.Batch {
		bs := make([]store.Batch, parts)
		for p := range bs {
			ch := fmt.Sprintf("wb-p%d", p)
			seq := uint64(2*r + 1)
			bs[p] = batch(int32(p), seqMsgs(ch, seq, seq+1, int32(p), int64(2*r))...)
		}
		return bs
	}
	for _, r := range []int{0, 1, 1, 2} { // round 1 twice: a retry after an unknown outcome
		for i, err := range bw.WriteBatches(ctx, round(r)) {
			if err != nil {
				t.Fatalf("round %d batch %d: %v", r, i, err)
			}
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	for i, err := range bw.WriteBatches(canceled, round(3)) {
		if err == nil {
			t.Fatalf("canceled call: batch %d reported written", i)
		}
	}
	for p := range parts {
		ch := fmt.Sprintf("wb-p%d", p)
		ps := mustLoad(t, s, int32(p))
		if ps.NextOffset != 6 || ps.Heads[ch].LastSeq != 6 {
			t.Fatalf("partition %d: checkpoint %d, head %d; want 6 and 6 (the canceled round stores nothing)", p, ps.NextOffset, ps.Heads[ch].LastSeq)
		}
		wantSeqs(t, ch, allMessages(t, s, ch), seqRange(1, 6))
	}
}
