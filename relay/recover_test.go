package relay

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herald-chat/herald/internal/auth"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// strictController serves Recover with the real controller's contract
// (controller/recover.go): all of since+1..head or nothing — a head more
// than limit ahead of since is not recovered, there is no prefix answer —
// and, in oldEpochs mode, the epoch "" for a channel without publications
// (the controller before epochs were derived from the topic). Publications
// are added with publish, which streams them to interested relays.
type strictController struct {
	heraldv1.UnimplementedRouterServer
	oldEpochs bool

	mu       sync.Mutex
	pubs     map[string][]*heraldv1.Publication
	streams  map[heraldv1.Router_StreamServer]map[string]bool
	recovers []*heraldv1.RecoverRequest
	// onRecover runs (unlocked) before each Recover with a limit is
	// answered: tests move the head meanwhile.
	onRecover func(req *heraldv1.RecoverRequest)
}

func startStrictController(t testing.TB, oldEpochs bool) (*strictController, string) {
	t.Helper()
	sc := &strictController{oldEpochs: oldEpochs, pubs: map[string][]*heraldv1.Publication{}, streams: map[heraldv1.Router_StreamServer]map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	heraldv1.RegisterRouterServer(gs, sc)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return sc, ln.Addr().String()
}

func (sc *strictController) epochLocked(ch string) string {
	if sc.oldEpochs && len(sc.pubs[ch]) == 0 {
		return ""
	}
	return "ep-" + ch
}

// publish appends n publications to ch and streams them.
func (sc *strictController) publish(ch string, n int) {
	sc.mu.Lock()
	var batch []*heraldv1.Publication
	for range n {
		seq := uint64(len(sc.pubs[ch]) + 1)
		p := &heraldv1.Publication{Channel: ch, Seq: seq, Epoch: "ep-" + ch, Message: &heraldv1.Message{Sender: "u", Data: []byte(`{"n":` + strconv.FormatUint(seq, 10) + `}`)}}
		sc.pubs[ch] = append(sc.pubs[ch], p)
		batch = append(batch, p)
	}
	var targets []heraldv1.Router_StreamServer
	for s, interest := range sc.streams {
		if interest[ch] {
			targets = append(targets, s)
		}
	}
	sc.mu.Unlock()
	for _, s := range targets {
		_ = s.Send(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Batch{Batch: &heraldv1.PublicationBatch{Publications: batch}}})
	}
}

// waitInterest waits until a relay stream has declared interest in ch. The
// relay's subscribe reply can come before its interest message (Positions
// and the stream are separate HTTP/2 streams), and publish streams only to
// relays already interested — unlike the real controller, whose later
// publications would reveal the gap to the relay.
func (sc *strictController) waitInterest(t testing.TB, ch string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sc.mu.Lock()
		in := false
		for _, interest := range sc.streams {
			in = in || interest[ch]
		}
		sc.mu.Unlock()
		if in {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no relay declared interest in %s", ch)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (sc *strictController) Stream(stream heraldv1.Router_StreamServer) error {
	_ = stream.Send(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Ownership{Ownership: &heraldv1.Ownership{ControllerId: "strict", PartitionCount: 4, Partitions: []int32{0, 1, 2, 3}}}})
	sc.mu.Lock()
	interest := map[string]bool{}
	sc.streams[stream] = interest
	sc.mu.Unlock()
	defer func() {
		sc.mu.Lock()
		delete(sc.streams, stream)
		sc.mu.Unlock()
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			return nil
		}
		if in := msg.GetInterest(); in != nil {
			sc.mu.Lock()
			for _, ch := range in.GetAdd() {
				interest[ch] = true
			}
			for _, ch := range in.GetRemove() {
				delete(interest, ch)
			}
			sc.mu.Unlock()
		}
	}
}

func (sc *strictController) Recover(_ context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	if req.GetChannel() == "" {
		return nil, status.Error(codes.InvalidArgument, "no channel")
	}
	if req.GetLimit() > 0 && sc.onRecover != nil {
		sc.onRecover(req)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.recovers = append(sc.recovers, req)
	ch := req.GetChannel()
	head := uint64(len(sc.pubs[ch]))
	resp := &heraldv1.RecoverResponse{Epoch: sc.epochLocked(ch), Offset: head}
	since, limit := req.GetSince(), uint64(req.GetLimit())
	switch {
	case limit == 0:
		resp.Recovered = true
	case req.GetEpoch() != "" && req.GetEpoch() != resp.Epoch:
	case since > head:
	case since == head:
		resp.Recovered = true
	case head-since > limit:
	default:
		resp.Publications, resp.Recovered = append([]*heraldv1.Publication(nil), sc.pubs[ch][since:head]...), true
	}
	return resp, nil
}

// relayFor builds a relay (not running: its event loops are not needed for
// recoverRange) whose only controller is addr.
func relayFor(t testing.TB, addr string) *Server {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Controllers: []string{addr}, Brokers: []string{"127.0.0.1:1"}, Partitions: 4, EventLoops: 1}
	srv, err := New(cfg, auth.NewVerifier(testSecret), testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.links.close(); srv.kcl.Close(); srv.pool.close() })
	return srv
}

func seqsOf(pubs []*heraldv1.Publication) string {
	var sb strings.Builder
	for i, p := range pubs {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatUint(p.GetSeq(), 10))
	}
	return sb.String()
}

func seqRange(from, to uint64) string {
	var sb strings.Builder
	for s := from; s <= to; s++ {
		if s > from {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.FormatUint(s, 10))
	}
	return sb.String()
}

// TestRecoverRangeControllerContract: recoverRange against the controller's
// all-or-nothing Recover. The relay recovers a client from offset since up
// to until (the last seq it broadcast) while the head may be further ahead:
// the load tester's recovery scenario saw recovered=false "from 40 while the
// channel is at 45" when the head moved past until during the recovery and
// the relay had asked for exactly until-since publications.
func TestRecoverRangeControllerContract(t *testing.T) {
	for _, tc := range []struct {
		name         string
		oldEpochs    bool
		head         int // publications before the recovery
		grow         int // publications added before the first Recover is answered
		since, until uint64
		epoch        string
		wantOK       bool
	}{
		{name: "head at until", head: 45, since: 40, until: 45, epoch: "ep-c", wantOK: true},
		{name: "head moved past until", head: 45, grow: 2, since: 40, until: 45, epoch: "ep-c", wantOK: true},
		{name: "head already past until", head: 47, since: 40, until: 45, epoch: "ep-c", wantOK: true},
		{name: "head more than the slack past until", head: 1600, since: 100, until: 200, epoch: "ep-c", wantOK: true},
		{name: "far behind, head moving", head: 1500, grow: 3, since: 0, until: 1400, epoch: "ep-c", wantOK: true},
		{name: "empty epoch is unknown, not different", head: 45, since: 40, until: 45, epoch: "", wantOK: true},
		{name: "empty epoch, old controller", oldEpochs: true, head: 45, grow: 1, since: 0, until: 45, epoch: "", wantOK: true},
		{name: "other epoch", head: 45, since: 40, until: 45, epoch: "ep-other", wantOK: false},
		{name: "beyond the bound", head: recoverLimitMax + 50, since: 10, until: recoverLimitMax + 20, epoch: "ep-c", wantOK: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, addr := startStrictController(t, tc.oldEpochs)
			sc.publish("c", tc.head)
			var once sync.Once
			sc.onRecover = func(*heraldv1.RecoverRequest) { once.Do(func() { sc.publish("c", tc.grow) }) }
			srv := relayFor(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pubs, got, ok := srv.recoverRangeEpoch(ctx, "c", tc.since, tc.epoch, tc.until)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v (requests %d)", ok, tc.wantOK, len(sc.recovers))
			}
			if !ok {
				return
			}
			if want := seqRange(tc.since+1, tc.until); seqsOf(pubs) != want {
				t.Fatalf("recovered seqs %s, want %s", seqsOf(pubs), want)
			}
			if got != "ep-c" {
				t.Fatalf("epoch %q, want ep-c", got)
			}
		})
	}
}

// TestRecoverWithEmptyEpoch: a client that subscribed while the channel had
// no publication (epoch "" from a controller that had no epoch yet, or the
// real epoch from one that has) recovers after a drop with that epoch and
// its offset: recovered=true with exactly the missed publications.
func TestRecoverWithEmptyEpoch(t *testing.T) {
	for _, old := range []bool{true, false} {
		t.Run(fmt.Sprintf("oldEpochs=%v", old), func(t *testing.T) {
			sc, addr := startStrictController(t, old)
			srv := startRelay(t, func(c *Config) { c.Controllers = []string{addr} })
			caps := []auth.Capability{{Channels: []string{"*"}, Match: "wildcard", Allow: []string{"sub"}}}
			tok := token(t, "u", nil, caps, 0)

			w := dialWS(t, srv.Addr())
			w.write(textFrame(`{"id":1,"connect":{"token":"` + tok + `"}}`))
			w.readText()
			w.write(textFrame(`{"id":2,"subscribe":{"channel":"fresh"}}`))
			reply := w.readText()
			wantEpoch := `"epoch":"ep-fresh"`
			if old {
				wantEpoch = ""
			}
			if !strings.Contains(reply, `"id":2`) || (wantEpoch != "" && !strings.Contains(reply, wantEpoch)) || (old && strings.Contains(reply, `"epoch"`)) {
				t.Fatalf("subscribe reply %s", reply)
			}
			epoch := "ep-fresh"
			if old {
				epoch = ""
			}
			sc.waitInterest(t, "fresh")
			sc.publish("fresh", 40)
			for i := 1; i <= 40; {
				// Pushes may come several per frame.
				for _, m := range strings.Split(w.readText(), "\n") {
					if !strings.Contains(m, `"offset":`+strconv.Itoa(i)+`}`) {
						t.Fatalf("push %d: %s", i, m)
					}
					i++
				}
			}
			_ = w.c.Close()
			sc.publish("fresh", 5)

			w2 := dialWS(t, srv.Addr())
			w2.write(textFrame(`{"id":1,"connect":{"token":"` + tok + `"}}`))
			w2.readText()
			w2.write(textFrame(`{"id":2,"subscribe":{"channel":"fresh","recover":true,"offset":40,"epoch":"` + epoch + `"}}`))
			reply = w2.readText()
			if !strings.Contains(reply, `"recovered":true`) {
				t.Fatalf("recover reply %s", reply)
			}
			// The relay may answer before the 5 new publications reached
			// it (the first client's subscription can still hold the
			// channel): then the reply is positioned at 40 and they follow
			// as pushes. Either way each of 41..45 arrives exactly once.
			got := reply
			for !strings.Contains(got, `"offset":45}`) {
				got += "\n" + w2.readText()
			}
			for seq := 41; seq <= 45; seq++ {
				if strings.Count(got, `"offset":`+strconv.Itoa(seq)+`}`) != 1 {
					t.Fatalf("publication %d not received exactly once after the recover: %s", seq, got)
				}
			}
		})
	}
}
