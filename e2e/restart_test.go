package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/herald-chat/herald/devstack"
)

// TestSecondRunKeepsHistory stops the whole stack and starts it again on the
// same data directory (what a second `make run` does): history survives and
// seqs continue densely under the same epoch.
func TestSecondRunKeepsHistory(t *testing.T) {
	dir := t.TempDir()
	const channel = "chat:restart"
	opts := func() devstack.Options {
		o := devstack.Ephemeral(dir)
		o.TokenSecret, o.Interval = "e2e-secret", time.Hour
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		return o
	}
	publish := func(st *devstack.Stack, from, to int) {
		c, rec := connectClient(t, st, "alice", channel)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := from; i <= to; i++ {
			if _, err := c.Publish(ctx, channel, []byte(msgData(i))); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
		pubs := rec.waitFor(channel, to-from+1, 20*time.Second)
		if len(pubs) != to-from+1 {
			t.Fatalf("received %d publications, want %d", len(pubs), to-from+1)
		}
		for i, p := range pubs {
			if p.Offset != uint64(from+i) {
				t.Fatalf("publication %d has offset %d, want %d", i, p.Offset, from+i)
			}
		}
		c.Close()
	}
	waitHistory := func(st *devstack.Stack, n int) {
		bearer := token(t, st.TokenSecret, "alice", channel)
		deadline := time.Now().Add(20 * time.Second)
		for {
			var ch struct {
				LastSeq int `json:"last_seq"`
			}
			// The channel is unknown (404) until its first batch is persisted.
			if code := getJSON(t, st.ManagementURL+"/v1/channels/"+channel, bearer, &ch); (code != http.StatusOK || ch.LastSeq < n) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			seqs := walkHistory(t, st, bearer, channel, "asc", 100)
			if len(seqs) == n || time.Now().After(deadline) {
				wantSeqs(t, "history", seqs, n, true)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	st, err := devstack.Start(ctx, opts())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	publish(st, 1, 5)
	waitHistory(st, 5)
	epoch := channelEpoch(t, st, channel)
	cancel()
	if err := st.Wait(); err != nil {
		t.Fatalf("first run stopped with: %v", err)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	st2, err := devstack.Start(ctx2, opts())
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	t.Cleanup(func() { cancel2(); _ = st2.Wait() })
	publish(st2, 6, 10)
	waitHistory(st2, 10)
	if e := channelEpoch(t, st2, channel); e != epoch || e == "" {
		t.Fatalf("epoch %q after the restart, %q before: clients could not recover", e, epoch)
	}
}

func channelEpoch(t *testing.T, st *devstack.Stack, channel string) string {
	t.Helper()
	var ch struct {
		Epoch string `json:"epoch"`
	}
	if code := getJSON(t, st.ManagementURL+"/v1/channels/"+channel, token(t, st.TokenSecret, "alice", channel), &ch); code != http.StatusOK {
		t.Fatalf("channel info: status %d", code)
	}
	return ch.Epoch
}
