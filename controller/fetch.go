package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The controller fetches the messages topic itself. kgo keeps the consumer
// group (membership, assignment, the partition callbacks) but fetches
// nothing: the topic is paused in it from the start. One fetch loop per
// partition leader issues Fetch requests for the owned partitions that
// broker leads (Broker.Request) and sequences what each returns before it
// asks again.
//
// Why: on the chat shape a fetch carries a few records, so the controller's
// cost is per fetch cycle, and in Go's execution tracer a kgo consumer cycle
// made ~7 goroutines runnable (the fetch manager's grant, the partition
// source's loop, the response handler, the buffered-fetch hand-off, the
// goroutine PollRecords starts to wait on its condition variable, the poll
// loop). A Fetch issued directly costs the broker connection's writer and
// reader and the answer to the loop that waits for it, which then does the
// sequencing itself.
const (
	// fetchMaxWait is how long the leader holds a fetch that finds nothing
	// (a long poll). It bounds how late a newly assigned or resumed
	// partition joins a fetch already waiting.
	fetchMaxWait = 500 * time.Millisecond
	// fetchMaxBytes and fetchPartitionMaxBytes bound one response (Kafka's
	// defaults; the leader returns a first batch larger than them whole).
	fetchMaxBytes          = 50 << 20
	fetchPartitionMaxBytes = 1 << 20
	// fetchRetry is the pause of a partition (or a whole loop) after an
	// error, before it is fetched again.
	fetchRetry = 250 * time.Millisecond
)

// fetcher runs the fetch loops. Its mu guards the leaders, pauses and
// back-offs; procMu is held while one response is sequenced and routed, so
// that one goroutine at a time assigns seqs and fills the streams' pending
// batches (fanout), and so that dropParts can wait out a response being
// processed (a barrier: after it, no record of a dropped partition is
// sequenced here).
type fetcher struct {
	s     *Server
	cl    *kgo.Client
	topic string
	dec   kgo.Decompressor

	procMu sync.Mutex

	mu      sync.Mutex
	topicID [16]byte
	leaders map[int32]int32 // partition → leader broker (-1: none known)
	stale   bool            // the leaders need refreshing (a fetch error)
	paused  map[int32]bool  // partitions the store writer paused
	retryAt map[int32]time.Time
	loops   map[int32]bool // brokers with a running loop
	changed chan struct{}  // closed and replaced on every change above or of ownership
	loopsWG sync.WaitGroup
	errLog  map[string]time.Time // rate limit of fetch error logs, by error
}

// newFetcher returns a fetcher for s; its client is set before run.
func newFetcher(s *Server) *fetcher {
	return &fetcher{
		s:       s,
		topic:   s.cfg.Topic,
		dec:     kgo.DefaultDecompressor(),
		leaders: map[int32]int32{},
		stale:   true,
		paused:  map[int32]bool{},
		retryAt: map[int32]time.Time{},
		loops:   map[int32]bool{},
		changed: make(chan struct{}),
		errLog:  map[string]time.Time{},
	}
}

// notify wakes the loops waiting for a change (assignment, revocation,
// resume, a back-off's end).
func (f *fetcher) notify() {
	f.mu.Lock()
	f.notifyLocked()
	f.mu.Unlock()
}

func (f *fetcher) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fetcher) pause(p int32) {
	f.mu.Lock()
	f.paused[p] = true
	f.mu.Unlock()
}

func (f *fetcher) resume(p int32) {
	f.mu.Lock()
	if f.paused[p] {
		delete(f.paused, p)
		f.notifyLocked()
	}
	f.mu.Unlock()
}

// barrier returns once no response is being processed: records of a
// partition removed from the owned set before it are never sequenced
// after it.
func (f *fetcher) barrier() {
	f.procMu.Lock()
	//nolint:staticcheck // an empty critical section is the point
	f.procMu.Unlock()
}

// run refreshes the partition leaders when needed and keeps one fetch loop
// per leader of an owned partition, until ctx ends; it returns after every
// loop has.
func (f *fetcher) run(ctx context.Context) {
	defer f.loopsWG.Wait()
	backoff := fetchRetry
	for {
		f.mu.Lock()
		stale := f.stale
		f.mu.Unlock()
		var retry <-chan time.Time
		if stale && len(f.s.ownedParts()) > 0 {
			if err := f.refresh(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				f.logErr("refreshing partition leaders", err)
				retry = time.After(backoff)
				backoff = min(2*backoff, 5*time.Second)
			} else {
				backoff = fetchRetry
			}
		}
		// Taken after the refresh (which notifies) and before the loops
		// start: a change from here on ends the wait below.
		f.mu.Lock()
		changed := f.changed
		f.mu.Unlock()
		f.startLoops(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
}

// refresh learns the topic's ID and every partition's leader. A partition
// without a leader (an election under way) is an error: the leaders stay
// stale and run asks again after a back-off.
func (f *fetcher) refresh(ctx context.Context) error {
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// A request of its own: kadm's Metadata answers from kgo's cache (up to
	// MetadataMinAge old), which still names the leader that just failed.
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(f.topic)
	req.Topics = []kmsg.MetadataRequestTopic{rt}
	resp, err := req.RequestWith(mctx, f.cl)
	if err != nil {
		return err
	}
	var td *kmsg.MetadataResponseTopic
	for i := range resp.Topics {
		if t := &resp.Topics[i]; t.Topic != nil && *t.Topic == f.topic {
			td = t
		}
	}
	if td == nil {
		return errors.New("topic missing from metadata")
	}
	if err := kerr.ErrorForCode(td.ErrorCode); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topicID = td.TopicID
	var leaderless []int32
	for _, pd := range td.Partitions {
		if pd.ErrorCode != 0 || pd.Leader < 0 {
			f.leaders[pd.Partition] = -1
			leaderless = append(leaderless, pd.Partition)
			continue
		}
		f.leaders[pd.Partition] = pd.Leader
	}
	f.notifyLocked()
	if len(leaderless) > 0 {
		slices.Sort(leaderless)
		return fmt.Errorf("partitions without a leader: %v", leaderless)
	}
	f.stale = false
	return nil
}

// startLoops starts a loop for every leader of an owned partition that has
// none.
func (f *fetcher) startLoops(ctx context.Context) {
	owned := f.s.ownedParts()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range owned {
		b, ok := f.leaders[p]
		if !ok || b < 0 || f.loops[b] {
			continue
		}
		f.loops[b] = true
		f.loopsWG.Add(1)
		go func() {
			defer f.loopsWG.Done()
			f.loop(ctx, b)
		}()
	}
}

// fetchPart is a partition of one fetch request: the state it was fetched
// for and the offset asked.
type fetchPart struct {
	ps     *partState
	offset int64
	broker int32 // the leader it was asked of
}

// partsFor returns the owned partitions broker leads that are neither
// paused nor backing off, the change channel to wait on when there are
// none, and when the first back-off ends. ok is false when broker leads no
// owned partition any more (its loop ends; run starts another when it leads
// one again).
func (f *fetcher) partsFor(broker int32, buf []fetchPart) (parts []fetchPart, changed <-chan struct{}, wake time.Duration, ok bool) {
	owned := f.s.ownedParts()
	now := time.Now()
	ids := make([]int32, 0, len(owned))
	f.mu.Lock()
	for _, p := range owned {
		if f.leaders[p] != broker {
			continue
		}
		ok = true
		if f.paused[p] {
			continue
		}
		if at, backing := f.retryAt[p]; backing {
			if d := at.Sub(now); d > 0 {
				if wake == 0 || d < wake {
					wake = d
				}
				continue
			}
			delete(f.retryAt, p)
		}
		ids = append(ids, p)
	}
	if !ok {
		delete(f.loops, broker)
	}
	changed = f.changed
	f.mu.Unlock()
	parts = buf[:0]
	for _, p := range ids {
		ps := f.s.part(p)
		if ps == nil {
			continue // revoked since ownedParts
		}
		ps.mu.RLock()
		next := ps.next
		ps.mu.RUnlock()
		parts = append(parts, fetchPart{ps: ps, offset: next, broker: broker})
	}
	return parts, changed, wake, ok
}

// loop fetches broker's owned partitions and processes each response before
// the next fetch, until ctx ends or broker leads none of them.
func (f *fetcher) loop(ctx context.Context, broker int32) {
	fo := newFanout(f.s.interest)
	bl := &badLog{}
	br := f.cl.Broker(int(broker))
	var (
		buf []fetchPart
		req = kmsg.NewPtrFetchRequest()
		mix producerMix
	)
	for ctx.Err() == nil {
		parts, changed, wake, ok := f.partsFor(broker, buf)
		buf = parts
		if !ok {
			return
		}
		if len(parts) == 0 {
			var t <-chan time.Time
			if wake > 0 {
				t = time.After(wake)
			}
			select {
			case <-ctx.Done():
			case <-changed:
			case <-t:
			}
			continue
		}
		f.buildRequest(req, parts)
		sent := time.Now()
		kresp, err := br.Request(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.logErr("fetching", err, "broker", broker)
			f.markStale()
			f.sleep(ctx, fetchRetry)
			continue
		}
		resp := kresp.(*kmsg.FetchResponse)
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			f.logErr("fetching", err, "broker", broker)
			f.markStale()
			f.sleep(ctx, fetchRetry)
			continue
		}
		f.s.m.fetches.Inc()
		records := f.process(ctx, resp, parts, fo, bl, &mix)
		f.s.m.fetchRecords.Observe(float64(records))
		if now := time.Now(); mix.several(now) {
			if d := fetchPace(f.s.cfg.FetchWindow, sent, now, records); d > 0 {
				f.s.m.fetchesPaced.Inc()
				f.sleep(ctx, d)
			}
		}
	}
}

// severalProducersHold is how long a fetch loop counts its partitions as
// written by several producers after it last saw the producer change.
const severalProducersHold = time.Second

// producerMix tells whether records of more than one producer (relay)
// reach a fetch loop. The fetch window is for that case only: one relay
// already coalesces its records into one produce request per produce
// window, so each fetch gets one of them and pacing would only add
// latency (measured: +1.1 ms p50, no CPU saved), while N relays' produce
// requests would each cost a fetch cycle without it. Every Herald relay
// is an idempotent producer with its own producer ID; records without one
// (-1) count as one producer.
type producerMix struct {
	last         int64
	seen         bool
	severalUntil time.Time
}

// see notes the producers of records fetched at now. One comparison per
// record: a record batch has one producer, and so, mostly, has a run of them.
func (p *producerMix) see(recs []*kgo.Record, now time.Time) {
	for _, r := range recs {
		if r.ProducerID == p.last && p.seen {
			continue
		}
		if p.seen {
			p.severalUntil = now.Add(severalProducersHold)
		}
		p.last, p.seen = r.ProducerID, true
	}
}

// several reports whether a second producer was seen within
// severalProducersHold before now.
func (p *producerMix) several(now time.Time) bool { return now.Before(p.severalUntil) }

// fetchPace returns how long to wait before the next fetch, after one sent
// at sent came back at now with records. A fetch answered sooner than a
// window after it was sent (typically at once: the leader already had
// records, relays produce faster than the loop fetches) is followed by one
// a window after it, which collects whatever every producer wrote meanwhile
// in one response. A fetch that waited about a window or more for its
// records (a long poll answered by a record after a quiet spell, or one
// relay's produce requests a produce window apart) or came back empty is
// followed at once, so a record after a quiet spell never waits for the
// window. A pause shorter than a third of the window is not taken: the
// next fetch then waits at the leader instead, and a timer that short
// would cost a thread wake-up per cycle at one relay's pace (cycles stay
// below 1.5 per window).
func fetchPace(window time.Duration, sent, now time.Time, records int) time.Duration {
	if window <= 0 || records == 0 {
		return 0
	}
	if d := sent.Add(window).Sub(now); d >= window/3 {
		return d
	}
	return 0
}

func (f *fetcher) buildRequest(req *kmsg.FetchRequest, parts []fetchPart) {
	f.mu.Lock()
	id := f.topicID
	f.mu.Unlock()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(fetchMaxWait / time.Millisecond)
	req.MinBytes = 1
	req.MaxBytes = fetchMaxBytes
	req.IsolationLevel = 0 // read uncommitted, as kgo's default
	req.SessionID = 0
	req.SessionEpoch = -1 // a full fetch each time: no fetch session to keep
	if len(req.Topics) != 1 {
		req.Topics = []kmsg.FetchRequestTopic{kmsg.NewFetchRequestTopic()}
	}
	t := &req.Topics[0]
	t.Topic, t.TopicID = f.topic, id
	t.Partitions = t.Partitions[:0]
	for _, fp := range parts {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = fp.ps.id
		rp.FetchOffset = fp.offset
		rp.CurrentLeaderEpoch = -1
		rp.LogStartOffset = -1
		rp.PartitionMaxBytes = fetchPartitionMaxBytes
		t.Partitions = append(t.Partitions, rp)
	}
}

// process sequences one response's records, partition by partition, and
// routes the publications (one batch per relay for the whole response).
// Partition errors are handled after procMu is released (they may ask
// Kafka for the log's start). mix learns the records' producers.
func (f *fetcher) process(ctx context.Context, resp *kmsg.FetchResponse, parts []fetchPart, fo *fanout, bl *badLog, mix *producerMix) (records int) {
	asked := func(p int32) *fetchPart {
		for i := range parts {
			if parts[i].ps.id == p {
				return &parts[i]
			}
		}
		return nil
	}
	var failed []partErr
	f.procMu.Lock()
	now := time.Now()
	for ti := range resp.Topics {
		rt := &resp.Topics[ti]
		for pi := range rt.Partitions {
			rp := &rt.Partitions[pi]
			fp := asked(rp.Partition)
			if fp == nil || f.s.part(rp.Partition) != fp.ps {
				continue // revoked (and perhaps reassigned) while the fetch waited
			}
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				failed = append(failed, partErr{*fp, err})
				continue
			}
			part, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				Topic:     f.topic,
				Partition: rp.Partition,
				Offset:    fp.offset,
			}, rp, f.dec, nil)
			if part.Err != nil {
				f.logErr("decoding fetched records", part.Err, "partition", rp.Partition)
				f.backOff(rp.Partition)
			}
			records += len(part.Records)
			mix.see(part.Records, now)
			f.s.processPartition(ctx, kgo.FetchTopicPartition{Topic: f.topic, FetchPartition: part}, fo, now, bl)
		}
	}
	if n := fo.flush(f.s.m); n > 0 {
		f.s.m.deliveries.Add(float64(n))
	}
	f.procMu.Unlock()
	for _, pe := range failed {
		f.partitionError(ctx, &pe.fetchPart, pe.err)
	}
	return records
}

type partErr struct {
	fetchPart
	err error
}

// partitionError handles a partition's fetch error. An offset
// out of range below the log's start means records were deleted before
// this controller sequenced them: it moves to the log's start, as a kgo
// consumer resetting to the start would. Above the end (the log was
// truncated or recreated) it waits for the log to reach its checkpoint.
// Anything else is a leadership change or an unavailable partition: the
// leaders are refreshed and the partition retried after a pause.
func (f *fetcher) partitionError(ctx context.Context, fp *fetchPart, err error) {
	p := fp.ps.id
	if !errors.Is(err, kerr.OffsetOutOfRange) {
		f.logErr("fetching a partition", err, "partition", p, "broker", fp.broker)
		f.markStale()
		f.backOff(p)
		return
	}
	f.s.m.fetchErrors.Inc()
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	starts, err := kadm.NewClient(f.cl).ListStartOffsets(lctx, f.topic)
	if err != nil {
		f.logErr("listing start offsets", err, "partition", p)
		f.backOff(p)
		return
	}
	start, ok := starts.Lookup(f.topic, p)
	if !ok || start.Err != nil || fp.offset >= start.Offset {
		f.s.log.Error("fetch offset beyond the partition's end, waiting for the log to reach it", "partition", p, "offset", fp.offset)
		f.backOff(p)
		return
	}
	ps := fp.ps
	ps.mu.Lock()
	moved := ps.next == fp.offset // else another fetch got there first
	if moved {
		ps.next = start.Offset
	}
	ps.mu.Unlock()
	if !moved {
		return
	}
	f.s.log.Warn("records deleted from the log before they were sequenced, skipping to its start", "partition", p, "from", fp.offset, "to", start.Offset)
}

func (f *fetcher) backOff(p int32) {
	f.mu.Lock()
	f.retryAt[p] = time.Now().Add(fetchRetry)
	f.mu.Unlock()
}

func (f *fetcher) markStale() {
	f.mu.Lock()
	if !f.stale {
		f.stale = true
		f.notifyLocked()
	}
	f.mu.Unlock()
}

func (f *fetcher) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// logErr counts a fetch error and logs it, at most once a second per error
// text (a partition without a leader fails every fetch until it has one).
func (f *fetcher) logErr(what string, err error, args ...any) {
	f.s.m.fetchErrors.Inc()
	key := what + ": " + err.Error() + fmt.Sprint(args...)
	now := time.Now()
	f.mu.Lock()
	last, seen := f.errLog[key]
	quiet := seen && now.Sub(last) < time.Second
	if !quiet {
		if len(f.errLog) >= 100 {
			clear(f.errLog)
		}
		f.errLog[key] = now
	}
	f.mu.Unlock()
	if !quiet {
		f.s.log.Warn(what, append(args, "err", err)...)
	}
}
