package controller

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	heraldv1 "github.com/herald-chat/herald/proto/herald/v1"
)

// BenchmarkRoute measures the fetch loop's live path: looking up a
// publication's channel in the sharded interest map (100k channels) and
// collecting it for R relay streams, with one flush (one batch enqueued per
// stream) every 1000 publications, as one poll would. "all": every stream
// wants every channel (fan-out R); "one": each channel is wanted by one
// stream.
func BenchmarkRoute(b *testing.B) {
	const channels = 100_000
	const perPoll = 1000
	names := make([]string, channels)
	pubs := make([]*heraldv1.Publication, channels)
	for i := range names {
		names[i] = fmt.Sprintf("chat:room-%06d", i)
		pubs[i] = &heraldv1.Publication{Channel: names[i], Seq: 1, Message: &heraldv1.Message{Data: []byte(`{}`)}}
	}
	for _, r := range []int{1, 4, 16} {
		for _, mode := range []string{"all", "one"} {
			b.Run(fmt.Sprintf("streams=%d/%s", r, mode), func(b *testing.B) {
				m, err := newMetrics(nil)
				if err != nil {
					b.Fatal(err)
				}
				in := newInterest(m)
				streams := make([]*relayStream, r)
				for i := range streams {
					streams[i] = newRelayStream(fmt.Sprintf("relay-%d", i), 1024)
				}
				for i, ch := range names {
					if mode == "one" {
						in.add(ch, streams[i%r])
						continue
					}
					for _, s := range streams {
						in.add(ch, s)
					}
				}
				f := newFanout(in)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					f.route(pubs[i%channels])
					if i%perPoll == perPoll-1 {
						f.flush(m)
						for _, s := range streams {
							for len(s.queue) > 0 {
								<-s.queue
							}
						}
					}
				}
			})
		}
	}
}

// BenchmarkRouteParallelInterest measures routing while relays change their
// interest concurrently (shard lock contention).
func BenchmarkRouteParallelInterest(b *testing.B) {
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	in := newInterest(m)
	streams := []*relayStream{newRelayStream("a", 1024), newRelayStream("b", 1024)}
	const channels = 100_000
	pubs := make([]*heraldv1.Publication, channels)
	for i := range pubs {
		ch := fmt.Sprintf("chat:room-%06d", i)
		pubs[i] = &heraldv1.Publication{Channel: ch, Message: &heraldv1.Message{}}
		in.add(ch, streams[0])
	}
	done := make(chan struct{})
	churned := make(chan struct{})
	go func() {
		defer close(churned)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			ch := pubs[i%channels].Channel
			in.add(ch, streams[1])
			in.remove(ch, streams[1])
		}
	}()
	f := newFanout(in)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.route(pubs[i%channels])
		if i%1000 == 999 {
			f.flush(m)
			for _, s := range streams {
				for len(s.queue) > 0 {
					<-s.queue
				}
			}
		}
	}
	b.StopTimer()
	close(done)
	<-churned
}

// BenchmarkEvictIdleRings is one sweep of the ring janitor over a
// partition with 100,000 channels holding a ring, none idle (the usual
// case): how long it holds the partition's lock.
func BenchmarkEvictIdleRings(b *testing.B) {
	const n = 100_000
	now := time.Now()
	ps := &partState{chans: map[string]*chanState{}}
	for i := range n {
		cs := &chanState{seq: 1, last: now.UnixNano()}
		cs.push(&heraldv1.Publication{Seq: 1}, 4)
		ps.chans["ch-"+strconv.Itoa(i)] = cs
		ps.ringed = append(ps.ringed, cs)
	}
	s := &Server{parts: map[int32]*partState{0: ps}}
	for b.Loop() {
		if s.evictIdleRings(now, time.Minute) != 0 {
			b.Fatal("evicted a ring that is not idle")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/channel")
}
