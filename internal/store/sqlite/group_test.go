package sqlite_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/herald-chat/herald/internal/store"
)

// TestConcurrentWritersGroupCommit: batches of many partitions written at
// once are committed in groups; a batch whose caller gave up (canceled
// context, also while its group is being written) fails alone, atomically,
// and every batch whose WriteBatch returned nil is stored whole.
func TestConcurrentWritersGroupCommit(t *testing.T) {
	s := open(t)
	const parts, rounds, perBatch = 12, 40, 5
	type result struct {
		part, round int
		err         error
	}
	results := make(chan result, parts*rounds)
	var wg sync.WaitGroup
	for p := 0; p < parts; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				b := store.Batch{Partition: int32(p), NextOffset: int64((r + 1) * perBatch)}
				ch := fmt.Sprintf("p%d:r%d", p, r)
				for i := 0; i < perBatch; i++ {
					off := int64(r*perBatch + i)
					b.Messages = append(b.Messages, store.Message{ID: fmt.Sprint(p, "-", off), Channel: ch,
						Seq: uint64(i + 1), Data: []byte(`{}`), Partition: int32(p), Offset: off})
				}
				b.Heads = []store.Head{{Channel: ch, Partition: int32(p), Epoch: "e", LastSeq: perBatch, Offset: int64(r*perBatch + perBatch - 1)}}
				ctx, cancel := context.WithCancel(context.Background())
				switch (p + r) % 7 {
				case 0:
					cancel() // gave up before writing
				case 3:
					go cancel() // gives up while it may be in a group
				}
				results <- result{p, r, s.WriteBatch(ctx, b)}
				cancel()
			}
		}(p)
	}
	wg.Wait()
	close(results)
	ctx := context.Background()
	ok, failed := 0, 0
	lastOK := map[int]int{}
	for res := range results {
		ch := fmt.Sprintf("p%d:r%d", res.part, res.round)
		msgs, err := s.Messages(ctx, store.Range{Channel: ch})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case res.err == nil:
			ok++
			if len(msgs) != perBatch {
				t.Errorf("%s: acknowledged batch has %d of %d messages", ch, len(msgs), perBatch)
			}
			lastOK[res.part] = max(lastOK[res.part], res.round+1)
		default:
			failed++
			if len(msgs) != 0 && len(msgs) != perBatch {
				t.Errorf("%s: failed batch partly stored (%d of %d): not atomic", ch, len(msgs), perBatch)
			}
			if (res.part+res.round)%7 != 0 && (res.part+res.round)%7 != 3 {
				t.Errorf("%s: a batch whose caller did not give up failed: %v", ch, res.err)
			}
		}
	}
	if ok < parts*rounds*5/7 || failed < parts*rounds/7 {
		t.Fatalf("ok %d, failed %d: the test did not exercise both outcomes", ok, failed)
	}
	for p, n := range lastOK {
		st, err := s.LoadPartition(ctx, int32(p))
		if err != nil {
			t.Fatal(err)
		}
		if st.NextOffset < int64(n*perBatch) {
			t.Errorf("partition %d: checkpoint %d behind its last acknowledged batch (%d)", p, st.NextOffset, n*perBatch)
		}
	}
}
