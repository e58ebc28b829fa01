package controller

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-chat/herald/internal/engines/kfake"
	"github.com/herald-chat/herald/internal/partition"
	"github.com/herald-chat/herald/internal/store"
	"github.com/herald-chat/herald/internal/store/sqlite"
	"github.com/herald-chat/herald/internal/testutil"
)

// buildHerald builds the herald binary into a temporary directory.
func buildHerald(tb testing.TB) string {
	tb.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(tb.TempDir(), "herald")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/herald")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./cmd/herald: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// childController is `herald controller` running as a child process.
type childController struct {
	id, addr, admin string
	cmd             *exec.Cmd
	log             *testutil.LockedBuffer
	exited          chan struct{}
	err             error
}

func startChild(tb testing.TB, bin string, env []string, id string) *childController {
	tb.Helper()
	c := &childController{id: id, addr: freeAddr(tb), admin: freeAddr(tb), log: &testutil.LockedBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, "controller", "-controller-id", id, "-controller-addr", c.addr, "-controller-admin-addr", c.admin)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", id, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	tb.Cleanup(func() {
		c.kill()
		if tb.Failed() {
			tb.Logf("log of %s:\n%s", id, c.log.String())
		}
	})
	waitFor(tb, 30*time.Second, id+" to be ready", func() bool {
		select {
		case <-c.exited:
			tb.Fatalf("%s exited: %v\n%s", id, c.err, c.log.String())
		default:
		}
		resp, err := http.Get("http://" + c.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return c
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *childController) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (c *childController) stop(tb testing.TB) {
	tb.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s did not stop on SIGTERM", c.id)
	}
	if c.err != nil {
		tb.Fatalf("%s exited with %v\n%s", c.id, c.err, c.log.String())
	}
}

// TestKill9 runs `herald controller` as child processes against an
// embedded Kafka (kfake, in this process) and a SQLite file, under a steady
// produce load: the only controller is killed with SIGKILL mid-stream and
// restarted; then a second one joins and the first is SIGKILLed again, so
// the survivor takes its partitions over. Every acked message is stored
// exactly once with dense seqs in Kafka order, and a relay connected to
// every controller saw 1..N of every channel, live delivery resuming from
// the survivor.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the herald binary and runs child processes")
	}
	t.Parallel()
	const parts = 4
	bin := buildHerald(t)
	ctx := context.Background()
	k, err := kfake.Start(ctx, kfake.Options{Port: 0, DataDir: t.TempDir(), Topic: testTopic, Partitions: parts,
		GroupMinSessionTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	brokers := k.Brokers()
	dbPath := filepath.Join(t.TempDir(), "herald.db")
	env := []string{
		"HERALD_KAFKA_BROKERS=" + strings.Join(brokers, ","),
		"HERALD_KAFKA_TOPIC=" + testTopic,
		fmt.Sprintf("HERALD_KAFKA_PARTITIONS=%d", parts),
		"HERALD_STORE_URI=" + dbPath,
		"HERALD_CONTROLLER_SESSION_TIMEOUT=1s",
		"HERALD_CONTROLLER_BATCH_INTERVAL=5ms",
		"HERALD_CONTROLLER_BATCH_MESSAGES=200",
		"HERALD_LOG_LEVEL=info",
	}
	chans := channelNames(8)
	prod := newProducer(t, brokers, parts, chans)
	view := newRelayView(t)

	// The test reads the store the children write (SQLite WAL: readers do
	// not block the writer).
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	stored := func(ch string) int {
		msgs, err := st.Messages(ctx, store.Range{Channel: ch, From: 1})
		if err != nil {
			return 0
		}
		return len(msgs)
	}
	ownsAll := func(id string) func() bool {
		return func() bool {
			o := view.ownership(id)
			return o != nil && len(o.Partitions) == parts
		}
	}

	a1 := startChild(t, bin, env, "a")
	view.attach(a1.addr, "a1", chans...)
	waitFor(t, 30*time.Second, "a to own every partition", ownsAll("a1"))
	stop := prod.load(10 * time.Millisecond)
	defer stop()

	// 1. SIGKILL the only controller mid-stream, restart it.
	waitFor(t, 20*time.Second, "messages to be persisted", func() bool { return stored(chans[0]) >= 20 })
	a1.kill()
	t.Logf("killed a at %d messages per channel produced, %d of %s stored", prod.count(), stored(chans[0]), chans[0])
	time.Sleep(300 * time.Millisecond) // produced while no controller runs
	a2 := startChild(t, bin, env, "a")
	view.attach(a2.addr, "a2", chans...)
	waitFor(t, 30*time.Second, "restarted a to own every partition", ownsAll("a2"))

	// 2. A second controller joins; SIGKILL the first under load.
	b := startChild(t, bin, env, "b")
	view.attach(b.addr, "b", chans...)
	waitFor(t, 30*time.Second, "the partitions to be split between a and b", func() bool {
		oa, ob := view.ownership("a2"), view.ownership("b")
		return oa != nil && ob != nil && len(oa.Partitions) > 0 && len(ob.Partitions) > 0 &&
			len(oa.Partitions)+len(ob.Partitions) == parts
	})
	time.Sleep(300 * time.Millisecond)
	ownedByA := slices.Clone(view.ownership("a2").Partitions)
	a2.kill()
	killedAt := time.Now()
	at := prod.count()
	waitFor(t, 30*time.Second, "b to announce every partition", ownsAll("b"))
	t.Logf("failover: b announced every partition %s after the SIGKILL of a", time.Since(killedAt).Round(time.Millisecond))
	for _, ch := range chans {
		if slices.Contains(ownedByA, partition.For(ch, parts)) {
			waitFor(t, 20*time.Second, "live delivery of "+ch+" from b", func() bool { return view.liveAfter("b", ch, uint64(at)) })
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	n := prod.count()
	storedAll(t, st, chans, n)
	waitCheckpoints(t, brokers, st, parts)
	view.check(chans, n)
	b.stop(t)
	t.Logf("%d messages per channel; the relay dropped %d identical replays and recovered %d", n, view.dups, view.recovered)
}
