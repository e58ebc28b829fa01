package relay

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/herald-chat/herald/internal/partition"
	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// startKafka runs kfake with the topic created explicitly.
func startKafka(t testing.TB, topic string, partitions int32) []string {
	t.Helper()
	_, addrs := startKafkaCluster(t, topic, partitions)
	return addrs
}

// startKafkaCluster is startKafka that also returns the cluster (Close is
// idempotent, so a test may stop it early).
func startKafkaCluster(t testing.TB, topic string, partitions int32) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	return c, c.ListenAddrs()
}

// fakeController is an in-test heraldv1.RouterServer: it consumes the topic,
// assigns per-channel seqs, streams publications to interested relays and
// serves Recover. It owns every partition, or those of owned.
type fakeController struct {
	heraldv1.UnimplementedRouterServer
	partitions int32
	owned      map[int32]bool // nil: all

	// gate, while not nil, freezes the controller as SIGSTOP would: its
	// stream handlers stop reading (HTTP/2 flow control fills), Positions
	// and Recover do not answer, the consumer stops. thaw closes it.
	fmu  sync.Mutex
	gate chan struct{}

	mu      sync.Mutex
	chans   map[string]*fakeChan
	streams map[*fakeStream]struct{}
	// skip, when set, is asked before a publication is streamed; true
	// withholds it from the streams (it stays recoverable).
	skip func(*heraldv1.Publication) bool
	// hello records the relay ids seen.
	hellos []string

	// noPositions makes Positions answer Unimplemented (an older
	// controller); positionsDelay slows each call (a remote controller).
	noPositions    atomic.Bool
	positionsDelay time.Duration
	// positionsCalls counts Positions calls, positionRecovers Recover
	// calls that only ask for a position (limit 0).
	positionsCalls, positionRecovers atomic.Int64

	gmu  sync.Mutex
	addr string
	gs   *grpc.Server

	// Presence as reported by the relay (one relay per fake): members by
	// channel and client id; fulls counts full deltas, snapshotEnds the
	// empty deltas that end them.
	pmu                 sync.Mutex
	members             map[string]map[string]*heraldv1.ClientInfo
	fulls, snapshotEnds int
}

type fakeChan struct {
	epoch string
	pubs  []*heraldv1.Publication
}

type fakeStream struct {
	mu       sync.Mutex
	s        heraldv1.Router_StreamServer
	interest map[string]bool
}

func startFakeController(t testing.TB, brokers []string, topic string, partitions int32) (*fakeController, string) {
	t.Helper()
	return startFakeControllerOwning(t, brokers, topic, partitions, nil)
}

// startFakeControllerOwning starts a fake controller that owns the
// partitions owned (all when nil): it streams and answers for their
// channels only.
func startFakeControllerOwning(t testing.TB, brokers []string, topic string, partitions int32, owned []int32) (*fakeController, string) {
	t.Helper()
	fc := &fakeController{partitions: partitions, chans: map[string]*fakeChan{}, streams: map[*fakeStream]struct{}{}}
	if owned != nil {
		fc.owned = map[int32]bool{}
		for _, p := range owned {
			fc.owned[p] = true
		}
	}
	fc.addr = "127.0.0.1:0"
	fc.start(t)

	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				if !fc.owns(r.Partition) {
					return
				}
				fc.wait(ctx)
				var m heraldv1.Message
				if err := proto.Unmarshal(r.Value, &m); err != nil {
					t.Errorf("fake controller: bad record: %v", err)
					return
				}
				fc.ingest(&m)
			})
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cons.Close()
		fc.stop()
	})
	return fc, fc.addr
}

// start serves the gRPC API on fc.addr (the same address after a stop).
func (fc *fakeController) start(t testing.TB) {
	t.Helper()
	fc.gmu.Lock()
	defer fc.gmu.Unlock()
	ln, err := net.Listen("tcp", fc.addr)
	if err != nil {
		t.Fatal(err)
	}
	fc.addr = ln.Addr().String()
	// A fixed receive window (no BDP growth): a frozen controller's
	// streams fill after 64 KiB, as a stopped process's would.
	fc.gs = grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	heraldv1.RegisterRouterServer(fc.gs, fc)
	go func() { _ = fc.gs.Serve(ln) }()
}

// stop takes the gRPC API down (streams break, Recover fails) while the
// consumer keeps assigning seqs, as a controller that is away while its
// partitions keep receiving publishes.
func (fc *fakeController) stop() {
	fc.gmu.Lock()
	defer fc.gmu.Unlock()
	if fc.gs != nil {
		fc.gs.Stop()
		fc.gs = nil
	}
}

func (fc *fakeController) owns(p int32) bool { return fc.owned == nil || fc.owned[p] }

// freeze stops the controller (see gate) until thaw.
func (fc *fakeController) freeze() {
	fc.fmu.Lock()
	defer fc.fmu.Unlock()
	if fc.gate == nil {
		fc.gate = make(chan struct{})
	}
}

func (fc *fakeController) thaw() {
	fc.fmu.Lock()
	defer fc.fmu.Unlock()
	if fc.gate != nil {
		close(fc.gate)
		fc.gate = nil
	}
}

// wait blocks while fc is frozen; false when ctx ended first.
func (fc *fakeController) wait(ctx context.Context) bool {
	fc.fmu.Lock()
	gate := fc.gate
	fc.fmu.Unlock()
	if gate == nil {
		return true
	}
	select {
	case <-gate:
		return true
	case <-ctx.Done():
		return false
	}
}

func (fc *fakeController) chanLocked(ch string) *fakeChan {
	c := fc.chans[ch]
	if c == nil {
		c = &fakeChan{epoch: "ep-" + ch}
		fc.chans[ch] = c
	}
	return c
}

func (fc *fakeController) ingest(m *heraldv1.Message) {
	fc.mu.Lock()
	c := fc.chanLocked(m.Channel)
	p := &heraldv1.Publication{Channel: m.Channel, Seq: uint64(len(c.pubs) + 1), Epoch: c.epoch, Message: m}
	c.pubs = append(c.pubs, p)
	var targets []*fakeStream
	if fc.skip == nil || !fc.skip(p) {
		for s := range fc.streams {
			s.mu.Lock()
			if s.interest[m.Channel] {
				targets = append(targets, s)
			}
			s.mu.Unlock()
		}
	}
	fc.mu.Unlock()
	for _, s := range targets {
		s.send(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Batch{Batch: &heraldv1.PublicationBatch{Publications: []*heraldv1.Publication{p}}}})
	}
}

func (s *fakeStream) send(m *heraldv1.ControllerMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.s.Send(m)
}

// broadcast sends pubs as one batch to every stream (for gap tests).
func (fc *fakeController) broadcast(pubs ...*heraldv1.Publication) {
	fc.sendAll(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Batch{Batch: &heraldv1.PublicationBatch{Publications: pubs}}})
}

// sendAll sends m to every open stream.
func (fc *fakeController) sendAll(m *heraldv1.ControllerMessage) {
	fc.mu.Lock()
	var targets []*fakeStream
	for s := range fc.streams {
		targets = append(targets, s)
	}
	fc.mu.Unlock()
	for _, s := range targets {
		s.send(m)
	}
}

func (fc *fakeController) Stream(stream heraldv1.Router_StreamServer) error {
	fs := &fakeStream{s: stream, interest: map[string]bool{}}
	var all []int32
	for i := range fc.partitions {
		if fc.owns(i) {
			all = append(all, i)
		}
	}
	if !fc.wait(stream.Context()) {
		return nil
	}
	fs.send(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Ownership{Ownership: &heraldv1.Ownership{ControllerId: "fake", PartitionCount: fc.partitions, Partitions: all}}})
	fc.mu.Lock()
	fc.streams[fs] = struct{}{}
	fc.mu.Unlock()
	defer func() {
		fc.mu.Lock()
		delete(fc.streams, fs)
		fc.mu.Unlock()
	}()
	for {
		if !fc.wait(stream.Context()) {
			return nil
		}
		msg, err := stream.Recv()
		if err != nil {
			return nil
		}
		switch k := msg.Kind.(type) {
		case *heraldv1.RelayMessage_Hello:
			fc.mu.Lock()
			fc.hellos = append(fc.hellos, k.Hello.RelayId)
			fc.mu.Unlock()
		case *heraldv1.RelayMessage_Presence:
			fc.applyPresence(k.Presence)
		case *heraldv1.RelayMessage_Interest:
			fs.mu.Lock()
			for _, ch := range k.Interest.Add {
				fs.interest[ch] = true
			}
			for _, ch := range k.Interest.Remove {
				delete(fs.interest, ch)
			}
			fs.mu.Unlock()
		}
	}
}

func (fc *fakeController) interested(ch string) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for s := range fc.streams {
		s.mu.Lock()
		ok := s.interest[ch]
		s.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

func (fc *fakeController) Positions(ctx context.Context, req *heraldv1.PositionsRequest) (*heraldv1.PositionsResponse, error) {
	if !fc.wait(ctx) {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if fc.noPositions.Load() {
		return nil, status.Error(codes.Unimplemented, "method Positions not implemented")
	}
	fc.positionsCalls.Add(1)
	time.Sleep(fc.positionsDelay)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	resp := &heraldv1.PositionsResponse{}
	for _, ch := range req.Channels {
		pos := &heraldv1.Position{}
		if ch != "" && fc.owns(partition.For(ch, fc.partitions)) {
			c := fc.chanLocked(ch)
			pos.Epoch, pos.Offset, pos.Owned = c.epoch, uint64(len(c.pubs)), true
		}
		resp.Positions = append(resp.Positions, pos)
	}
	return resp, nil
}

func (fc *fakeController) Recover(ctx context.Context, req *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	if !fc.wait(ctx) {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if req.Channel == "" {
		return nil, status.Error(codes.InvalidArgument, "no channel")
	}
	if !fc.owns(partition.For(req.Channel, fc.partitions)) {
		return nil, status.Error(codes.FailedPrecondition, "not the owner")
	}
	if req.Limit == 0 {
		fc.positionRecovers.Add(1)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	c := fc.chanLocked(req.Channel)
	resp := &heraldv1.RecoverResponse{Epoch: c.epoch, Offset: uint64(len(c.pubs))}
	if req.Epoch != "" && req.Epoch != c.epoch {
		return resp, nil
	}
	for i := req.Since; i < uint64(len(c.pubs)) && uint32(len(resp.Publications)) < req.Limit; i++ {
		resp.Publications = append(resp.Publications, c.pubs[i])
	}
	resp.Recovered = req.Since+uint64(len(resp.Publications)) == resp.Offset
	return resp, nil
}

// notOwner is a controller that owns nothing: Recover answers
// FailedPrecondition and its stream only sends an empty ownership.
type notOwner struct {
	heraldv1.UnimplementedRouterServer
}

func (notOwner) Recover(context.Context, *heraldv1.RecoverRequest) (*heraldv1.RecoverResponse, error) {
	return nil, status.Error(codes.FailedPrecondition, "not the owner")
}

func (notOwner) Stream(s heraldv1.Router_StreamServer) error {
	_ = s.Send(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Ownership{Ownership: &heraldv1.Ownership{ControllerId: "none", PartitionCount: 4}}})
	for {
		if _, err := s.Recv(); err != nil {
			return nil
		}
	}
}

func startNotOwner(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	heraldv1.RegisterRouterServer(gs, notOwner{})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func (fc *fakeController) applyPresence(d *heraldv1.PresenceDelta) {
	fc.pmu.Lock()
	defer fc.pmu.Unlock()
	if d.Full {
		fc.fulls++
		fc.members = map[string]map[string]*heraldv1.ClientInfo{}
	} else if len(d.Changes) == 0 {
		fc.snapshotEnds++
	}
	if fc.members == nil {
		fc.members = map[string]map[string]*heraldv1.ClientInfo{}
	}
	for _, c := range d.Changes {
		mm := fc.members[c.Channel]
		if c.Leave {
			delete(mm, c.Client.Client)
			continue
		}
		if mm == nil {
			mm = map[string]*heraldv1.ClientInfo{}
			fc.members[c.Channel] = mm
		}
		mm[c.Client.Client] = c.Client
	}
}

// presenceOf returns the members of ch the relay reported.
func (fc *fakeController) presenceOf(ch string) map[string]*heraldv1.ClientInfo {
	fc.pmu.Lock()
	defer fc.pmu.Unlock()
	out := map[string]*heraldv1.ClientInfo{}
	for id, c := range fc.members[ch] {
		out[id] = c
	}
	return out
}

func (fc *fakeController) Presence(_ context.Context, req *heraldv1.PresenceRequest) (*heraldv1.PresenceResponse, error) {
	mm := fc.presenceOf(req.Channel)
	resp := &heraldv1.PresenceResponse{Owned: true, NumClients: uint32(len(mm))}
	users := map[string]bool{}
	for _, c := range mm {
		users[c.User] = true
		if !req.StatsOnly {
			resp.Clients = append(resp.Clients, c)
		}
	}
	resp.NumUsers = uint32(len(users))
	return resp, nil
}

// sendEvents sends join/leave events to every stream.
func (fc *fakeController) sendEvents(evs ...*heraldv1.PresenceEvent) {
	fc.sendAll(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Presence{Presence: &heraldv1.PresenceEvents{Events: evs}}})
}
