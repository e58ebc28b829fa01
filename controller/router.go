package controller

import (
	"errors"
	"hash/maphash"
	"io"
	"sync"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// numShards is the number of interest map shards (a power of two).
const numShards = 64

// maxBatchBytes bounds the approximate payload of one PublicationBatch
// message, well below gRPC's default 4 MiB receive limit.
const maxBatchBytes = 1 << 20

// interest maps a channel to the relay streams that asked for it, sharded by
// channel hash with a RWMutex per shard. The fetch loops read it; relay
// receive goroutines write it.
type interest struct {
	seed   maphash.Seed
	shards [numShards]interestShard
	m      *metrics
}

type interestShard struct {
	mu sync.RWMutex
	// streams per channel; a short slice is faster to range over than a set
	// on the hot path, and interest changes are rare by comparison.
	m map[string][]*relayStream
}

func newInterest(m *metrics) *interest {
	in := &interest{seed: maphash.MakeSeed(), m: m}
	for i := range in.shards {
		in.shards[i].m = make(map[string][]*relayStream)
	}
	return in
}

func (in *interest) shard(channel string) *interestShard {
	return &in.shards[maphash.String(in.seed, channel)&(numShards-1)]
}

// add records that r wants channel. The caller guarantees r does not have it
// yet (relayStream.chans).
func (in *interest) add(channel string, r *relayStream) {
	sh := in.shard(channel)
	sh.mu.Lock()
	list, ok := sh.m[channel]
	sh.m[channel] = append(list, r)
	sh.mu.Unlock()
	if !ok {
		in.m.interestChannels.Inc()
	}
}

// remove forgets that r wants channel.
func (in *interest) remove(channel string, r *relayStream) {
	sh := in.shard(channel)
	sh.mu.Lock()
	list := sh.m[channel]
	for i, x := range list {
		if x == r {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			list = list[:last]
			break
		}
	}
	gone := false
	if len(list) == 0 {
		if _, ok := sh.m[channel]; ok {
			delete(sh.m, channel)
			gone = true
		}
	} else {
		sh.m[channel] = list
	}
	sh.mu.Unlock()
	if gone {
		in.m.interestChannels.Dec()
	}
}

// fanout collects, during one fetch response, the publications for each
// interested relay stream, so that each stream gets one batch per fetch.
// Each fetch loop has its own; the streams' pending slices are touched only
// under fetcher.procMu (one response processed at a time).
type fanout struct {
	in      *interest
	touched []*relayStream // streams with pending publications
}

func newFanout(in *interest) *fanout {
	return &fanout{in: in}
}

// route adds pub to the pending batch of every stream interested in its
// channel.
func (f *fanout) route(pub *heraldv1.Publication) {
	sh := f.in.shard(pub.Channel)
	sh.mu.RLock()
	for _, r := range sh.m[pub.Channel] {
		if len(r.pending) == 0 {
			f.touched = append(f.touched, r)
		}
		r.pending = append(r.pending, pub)
	}
	sh.mu.RUnlock()
}

// flush enqueues the pending batches (split at maxBatchBytes) on their
// streams and returns how many publications were enqueued. It never blocks:
// a stream whose queue is full is closed as a slow relay.
func (f *fanout) flush(m *metrics) int {
	n := 0
	for i, r := range f.touched {
		if r.enqueuePubs(r.pending, m) {
			n += len(r.pending)
		}
		r.pending = nil // handed over (or dropped with a dead stream)
		f.touched[i] = nil
	}
	f.touched = f.touched[:0]
	return n
}

// relayStream is one relay's open Stream call.
type relayStream struct {
	relayID string
	queue   chan *heraldv1.ControllerMessage
	ownWake chan struct{} // capacity 1: the ownership changed
	done    chan struct{} // closed by kill
	once    sync.Once
	err     error // why the stream ended; read after <-done

	// chans is the stream's interest, touched only by its receive goroutine.
	chans map[string]struct{}
	// pending is this fetch's publications for the stream, touched only by
	// a fanout under fetcher.procMu.
	pending []*heraldv1.Publication
}

func newRelayStream(relayID string, queue int) *relayStream {
	r := &relayStream{
		relayID: relayID,
		queue:   make(chan *heraldv1.ControllerMessage, queue),
		ownWake: make(chan struct{}, 1),
		done:    make(chan struct{}),
		chans:   make(map[string]struct{}),
	}
	r.ownWake <- struct{}{} // announce ownership on open
	return r
}

// kill ends the stream with err (nil: a clean end). It reports whether this
// call ended it.
func (r *relayStream) kill(err error) bool {
	killed := false
	r.once.Do(func() {
		r.err = err
		close(r.done)
		killed = true
	})
	return killed
}

func (r *relayStream) wakeOwnership() {
	select {
	case r.ownWake <- struct{}{}:
	default:
	}
}

var errSlowRelay = status.Error(codes.ResourceExhausted, "slow relay")

// enqueuePubs queues pubs as one or more batches without blocking. When the
// enqueue queues one message (presence events, a server API command)
// without blocking; a full queue closes the stream as a slow relay, as for
// publications. It reports whether it was queued.
func (r *relayStream) enqueue(cm *heraldv1.ControllerMessage, m *metrics) bool {
	select {
	case <-r.done:
		return false
	default:
	}
	select {
	case r.queue <- cm:
		return true
	default:
		if r.kill(errSlowRelay) {
			m.slowRelays.Inc()
		}
		return false
	}
}

// queue is full the stream is closed as slow. It reports success.
func (r *relayStream) enqueuePubs(pubs []*heraldv1.Publication, m *metrics) bool {
	select {
	case <-r.done:
		return false
	default:
	}
	for len(pubs) > 0 {
		n, size := 0, 0
		for n < len(pubs) && (n == 0 || size < maxBatchBytes) {
			msg := pubs[n].Message
			size += 64 + len(pubs[n].Channel) + len(msg.GetData()) + len(msg.GetInfo())
			n++
		}
		cm := &heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Batch{
			Batch: &heraldv1.PublicationBatch{Publications: pubs[:n:n]}}}
		select {
		case r.queue <- cm:
		default:
			if r.kill(errSlowRelay) {
				m.slowRelays.Inc()
			}
			return false
		}
		pubs = pubs[n:]
	}
	return true
}

// Stream implements heraldv1.RouterServer: the first message must be Hello;
// then interest deltas flow in and ownership plus publication batches flow
// out. This handler goroutine is the stream's only sender.
func (s *Server) Stream(stream grpc.BidiStreamingServer[heraldv1.RelayMessage, heraldv1.ControllerMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message of a relay stream must be hello")
	}
	r := newRelayStream(hello.GetRelayId(), s.cfg.StreamQueue)
	if !s.addStream(r) {
		return status.Error(codes.Unavailable, "controller shutting down")
	}
	defer s.removeStream(r)

	s.recvWG.Add(1)
	go func() {
		defer s.recvWG.Done()
		s.recvLoop(stream, r)
	}()

	ctx := stream.Context()
	for {
		select {
		case <-r.done:
			return r.err
		case <-ctx.Done():
			r.kill(ctx.Err())
			return status.FromContextError(ctx.Err()).Err()
		case <-r.ownWake:
			own := s.ownership.Load()
			if err := stream.Send(&heraldv1.ControllerMessage{Kind: &heraldv1.ControllerMessage_Ownership{Ownership: own}}); err != nil {
				r.kill(err)
				return err
			}
		case cm := <-r.queue:
			if err := stream.Send(cm); err != nil {
				r.kill(err)
				return err
			}
		}
	}
}

// recvLoop applies a relay's interest deltas until the stream ends, then
// removes all of the stream's interest.
func (s *Server) recvLoop(stream grpc.BidiStreamingServer[heraldv1.RelayMessage, heraldv1.ControllerMessage], r *relayStream) {
	defer func() {
		for ch := range r.chans {
			s.interest.remove(ch, r)
		}
		clear(r.chans)
		s.presence.streamEnded(r)
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				r.kill(nil)
			} else {
				r.kill(err)
			}
			return
		}
		if pd := msg.GetPresence(); pd != nil {
			s.presence.apply(r, pd)
			continue
		}
		if rep := msg.GetReply(); rep != nil {
			s.cmds.deliver(rep)
			continue
		}
		d := msg.GetInterest()
		if d == nil {
			continue // a repeated hello or a kind this controller ignores
		}
		for _, ch := range d.GetAdd() {
			if _, ok := r.chans[ch]; ok || ch == "" {
				continue
			}
			r.chans[ch] = struct{}{}
			s.interest.add(ch, r)
		}
		for _, ch := range d.GetRemove() {
			if _, ok := r.chans[ch]; !ok {
				continue
			}
			delete(r.chans, ch)
			s.interest.remove(ch, r)
		}
	}
}

// addStream registers r for ownership announcements; false once shutting
// down.
func (s *Server) addStream(r *relayStream) bool {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.streamsClosed {
		return false
	}
	s.streams[r] = struct{}{}
	s.m.relayStreams.Inc()
	return true
}

func (s *Server) removeStream(r *relayStream) {
	s.streamsMu.Lock()
	if _, ok := s.streams[r]; ok {
		delete(s.streams, r)
		s.m.relayStreams.Dec()
	}
	s.streamsMu.Unlock()
}

// wakeStreams tells every relay stream to send the current ownership.
func (s *Server) wakeStreams() {
	s.streamsMu.Lock()
	for r := range s.streams {
		r.wakeOwnership()
	}
	s.streamsMu.Unlock()
}

// closeStreams ends every relay stream with err and refuses new ones.
func (s *Server) closeStreams(err error) {
	s.streamsMu.Lock()
	s.streamsClosed = true
	for r := range s.streams {
		r.kill(err)
	}
	s.streamsMu.Unlock()
}
