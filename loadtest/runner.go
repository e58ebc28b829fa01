package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
)

// plan is the share of the run one process executes.
type plan struct {
	Index       int     `json:"index"` // worker index, 0 in-process
	Count       int     `json:"count"` // processes in the run
	ConnFrom    int     `json:"conn_from"`
	ConnTo      int     `json:"conn_to"`    // subscriber indices [from, to)
	Publishers  []int   `json:"publishers"` // dedicated publisher numbers 0…P-1 this process hosts
	PubRate     float64 `json:"pub_rate"`   // publications/s by this process
	ConnectRate float64 `json:"connect_rate"`
	ChurnRate   float64 `json:"churn_rate"`
	DropNth     uint64  `json:"drop_nth"`
}

// makePlans splits cfg over n processes.
func makePlans(cfg *Config, n int) []plan {
	plans := make([]plan, n)
	for i := range plans {
		from, to := cfg.Conns*i/n, cfg.Conns*(i+1)/n
		share := float64(to-from) / float64(cfg.Conns)
		p := plan{Index: i, Count: n, ConnFrom: from, ConnTo: to, ConnectRate: cfg.ConnectRate * share}
		switch cfg.Scenario {
		case ScenarioBroadcast, ScenarioRecovery:
			for j := i; j < cfg.Publishers; j += n {
				p.Publishers = append(p.Publishers, j)
			}
			p.PubRate = cfg.Rate * float64(len(p.Publishers)) / float64(cfg.Publishers)
		case ScenarioChat, ScenarioChurn:
			p.PubRate = cfg.Rate * share
		}
		if cfg.Scenario == ScenarioChurn {
			p.ChurnRate = cfg.ChurnRate * share
		}
		if i == 0 {
			p.DropNth = cfg.TestDropNth
		}
		plans[i] = p
	}
	return plans
}

// timeline holds the absolute times (unix ns) of a run's phases; the parent
// fixes them so that every worker measures the same window.
type timeline struct {
	Start       int64 `json:"start"`        // publishing (and churn) start: warm-up begins
	WindowStart int64 `json:"window_start"` // measurement window
	WindowEnd   int64 `json:"window_end"`   // publishing stops
	DropAt      int64 `json:"drop_at"`      // recovery: drop connections
	End         int64 `json:"end"`          // drain over
}

func newTimeline(cfg *Config, start time.Time) timeline {
	ws := start.Add(cfg.Warmup)
	we := ws.Add(cfg.Duration)
	return timeline{
		Start: start.UnixNano(), WindowStart: ws.UnixNano(), WindowEnd: we.UnixNano(),
		DropAt: ws.Add(cfg.Duration / 2).UnixNano(), End: we.Add(cfg.Drain).UnixNano(),
	}
}

// runner executes one process's share of a run: it owns the connections,
// their goroutines (waited for in finish), a publisher loop and a churn loop.
type runner struct {
	cfg      *Config
	plan     plan
	dialer   ws.Dialer
	urls     []string // --url: connections spread over them
	channels []string
	pad      []byte
	sources  *sourcePool
	reactors *reactorPool // epoll reader; nil with the goroutine reader

	connectLat, subscribeLat, ackLat, e2eLat *AtomicHistogram
	windowStart, windowEnd                   atomic.Int64
	publishing                               atomic.Bool

	acked, pubErrors, pubSkipped, unacked, behind                   atomic.Uint64
	reconnects, resubscribed, recovered, notRecovered, epochChanged atomic.Uint64
	recoveredPubs, noOffset, beforeSubscribe, unexpectedPubs        atomic.Uint64
	malformed, serverUnsubs, liveSeq, droppedByHook, dropped        atomic.Uint64
	churned, attempted, connectedOK, connectFailed                  atomic.Uint64
	ackedPerChan                                                    []atomic.Uint64
	errs                                                            *errCounter

	ctx    context.Context // connections' context, cancelled by finish
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	conns      []*conn // subscribers, including churn replacements
	pubs       []*conn
	churnSeq   int
	readyPeak  int
	settledN   int
	settledAll chan struct{}
}

func newRunner(cfg *Config, p plan) (*runner, error) {
	urls := cfg.urls()
	u, _ := url.Parse(urls[0])
	ips, err := parseSourceIPs(cfg.SourceIPs, u.Hostname())
	if err != nil {
		return nil, err
	}
	r := &runner{
		cfg: cfg, plan: p, urls: urls,
		sources:    newSourcePool(ips),
		pad:        bytes.Repeat([]byte{'x'}, cfg.Payload),
		connectLat: new(AtomicHistogram), subscribeLat: new(AtomicHistogram),
		ackLat: new(AtomicHistogram), e2eLat: new(AtomicHistogram),
		errs:         newErrCounter(),
		ackedPerChan: make([]atomic.Uint64, cfg.Channels),
		settledAll:   make(chan struct{}),
	}
	r.dialer = ws.Dialer{
		ReadBufferSize:  2048,
		WriteBufferSize: 1024,
		Timeout:         cfg.Timeout,
		NetDial:         r.sources.dial,
	}
	r.channels = channelNames(cfg)
	if cfg.reader() == ReaderEpoll {
		if r.reactors, err = newReactorPool(cfg.readers()); err != nil {
			return nil, fmt.Errorf("starting the epoll reader: %w", err)
		}
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// channelNames returns the run's channel names: <prefix><i>. Scenarios
// share the scheme, so one run can reuse (warm) another's channels through
// --channel-prefix.
func channelNames(cfg *Config) []string {
	out := make([]string, cfg.Channels)
	for i := range out {
		out[i] = cfg.ChannelPrefix + strconv.Itoa(i)
	}
	return out
}

// token returns the connection token of a connection with the given subject
// and (server-side mode) channel.
func (r *runner) token(subject string, channel string) (string, error) {
	if r.cfg.Token != "" {
		return r.cfg.Token, nil
	}
	type capability struct {
		Channels []string `json:"channels"`
		Match    string   `json:"match,omitempty"`
		Allow    []string `json:"allow"`
	}
	type claims struct {
		jwt.RegisteredClaims
		Channels []string     `json:"channels,omitempty"`
		Caps     []capability `json:"caps,omitempty"`
	}
	c := claims{Caps: []capability{{Channels: []string{"*"}, Match: "wildcard", Allow: []string{"sub", "pub"}}}}
	c.Subject = subject
	now := time.Now()
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(24*time.Hour + r.cfg.Warmup + r.cfg.Duration))
	if r.cfg.ServerSide && channel != "" {
		c.Channels = []string{channel}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(r.cfg.Secret))
}

func (r *runner) newConn(idx int, subject string, ch int) (*conn, error) {
	c := &conn{r: r, idx: idx, sock: -1}
	chName := ""
	// Several endpoints: the k-th subscriber of each channel (idx/channels)
	// goes to endpoint k, so every channel has members on every relay.
	pick := idx
	if ch >= 0 {
		chName = r.channels[ch]
		c.sub = &subState{ch: ch, name: chName}
		pick = idx / r.cfg.Channels
	}
	c.url = r.urls[pick%len(r.urls)]
	tok, err := r.token(subject, chName)
	if err != nil {
		return nil, fmt.Errorf("signing token: %w", err)
	}
	c.token = tok
	return c, nil
}

// settled is called once per initial connection attempt.
func (r *runner) settled(ok bool) {
	if ok {
		r.connectedOK.Add(1)
	} else {
		r.connectFailed.Add(1)
	}
	r.mu.Lock()
	r.settledN++
	if r.settledN == r.plan.ConnTo-r.plan.ConnFrom+len(r.plan.Publishers) {
		close(r.settledAll)
	}
	r.mu.Unlock()
}

// connect opens this process's connections at its connect rate and returns
// once every one of them is ready or has failed (or ctx is done).
func (r *runner) connect(ctx context.Context) error {
	var list []*conn
	for _, j := range r.plan.Publishers {
		c, err := r.newConn(r.cfg.Conns+j, fmt.Sprintf("lt-pub-%d", j), -1)
		if err != nil {
			return err
		}
		list = append(list, c)
	}
	npubs := len(list)
	for i := r.plan.ConnFrom; i < r.plan.ConnTo; i++ {
		c, err := r.newConn(i, fmt.Sprintf("lt-%d", i), i%r.cfg.Channels)
		if err != nil {
			return err
		}
		list = append(list, c)
	}
	r.mu.Lock()
	r.pubs, r.conns = list[:npubs], list[npubs:]
	if len(list) == 0 {
		close(r.settledAll)
	}
	r.mu.Unlock()

	// Publishers first, so they are ready when publishing starts.
	start := time.Now()
	for i, c := range list {
		if r.plan.ConnectRate > 0 {
			due := start.Add(time.Duration(float64(i) / r.plan.ConnectRate * float64(time.Second)))
			if d := time.Until(due); d > 0 && !sleepCtx(ctx, d) {
				break
			}
		} else if ctx.Err() != nil {
			break
		}
		r.attempted.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			c.run(r.ctx, r.settled)
		}()
	}
	select {
	case <-r.settledAll:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run executes the timed phases (warm-up, window, drain) of tl. It returns
// at tl.End or when ctx is cancelled.
func (r *runner) run(ctx context.Context, tl timeline) {
	r.windowStart.Store(tl.WindowStart)
	r.windowEnd.Store(tl.WindowEnd)
	if d := time.Until(time.Unix(0, tl.Start)); d > 0 && !sleepCtx(ctx, d) {
		return
	}
	r.publishing.Store(true)
	rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(r.plan.Index)))
	var loops sync.WaitGroup
	lctx, stopLoops := context.WithDeadline(ctx, time.Unix(0, tl.WindowEnd))
	defer stopLoops()
	if r.plan.PubRate > 0 {
		loops.Add(1)
		go func() {
			defer loops.Done()
			r.publishLoop(lctx, time.Unix(0, tl.Start), rand.New(rand.NewPCG(r.cfg.Seed, uint64(r.plan.Index)+1000)))
		}()
	}
	if r.plan.ChurnRate > 0 {
		loops.Add(1)
		go func() {
			defer loops.Done()
			r.churnLoop(lctx, rand.New(rand.NewPCG(r.cfg.Seed, uint64(r.plan.Index)+2000)))
		}()
	}
	if r.cfg.Scenario == ScenarioRecovery && r.cfg.DropFraction > 0 {
		loops.Add(1)
		go func() {
			defer loops.Done()
			if d := time.Until(time.Unix(0, tl.DropAt)); d > 0 && !sleepCtx(lctx, d) {
				return
			}
			r.dropSome(rng)
		}()
	}
	loops.Wait()
	r.publishing.Store(false)
	if d := time.Until(time.Unix(0, tl.End)); d > 0 {
		sleepCtx(ctx, d)
	}
}

// publishLoop publishes at plan.PubRate from start until ctx ends, catching
// up on ticks it was late for (up to one second's worth).
func (r *runner) publishLoop(ctx context.Context, start time.Time, rng *rand.Rand) {
	rate := r.plan.PubRate
	tick := max(time.Millisecond, time.Duration(float64(time.Second)/rate))
	tick = min(tick, 100*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var sent, k uint64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := uint64(now.Sub(start).Seconds() * rate)
			if due > sent+uint64(rate)+1 {
				r.behind.Add(due - sent - uint64(rate))
				sent = due - uint64(rate)
			}
			for ; sent < due; sent++ {
				r.publishOne(rng, &k)
			}
		}
	}
}

// publishOne sends one publication: from a dedicated publisher round-robin
// over the channels, or (chat, churn) from a random ready connection to its
// channel.
func (r *runner) publishOne(rng *rand.Rand, k *uint64) {
	var c *conn
	ch := 0
	if len(r.pubs) > 0 {
		c = r.pubs[*k%uint64(len(r.pubs))]
		ch = int(*k % uint64(len(r.channels)))
		*k++
	} else {
		r.mu.Lock()
		n := len(r.conns)
		for try := 0; try < 8 && n > 0; try++ {
			cand := r.conns[rng.IntN(n)]
			if cand.state.Load() == stReady {
				c = cand
				break
			}
		}
		r.mu.Unlock()
		if c == nil {
			r.pubSkipped.Add(1)
			return
		}
		ch = c.sub.ch
	}
	if err := c.publish(ch, time.Now().UnixNano()); err != nil {
		if errors.Is(err, errNotReady) {
			r.pubSkipped.Add(1)
			return
		}
		r.errs.add("publish: write failed", err)
		r.pubSkipped.Add(1)
		c.kill(stopNone, false) // a half-written frame: reconnect
	}
}

// churnLoop closes random ready subscribers and replaces each with a new
// connection in the same channel.
func (r *runner) churnLoop(ctx context.Context, rng *rand.Rand) {
	interval := time.Duration(float64(time.Second) / r.plan.ChurnRate)
	t := time.NewTicker(max(interval, time.Millisecond))
	defer t.Stop()
	start := time.Now()
	var done uint64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := uint64(now.Sub(start).Seconds() * r.plan.ChurnRate)
			for ; done < due; done++ {
				r.churnOne(rng)
			}
		}
	}
}

func (r *runner) churnOne(rng *rand.Rand) {
	r.mu.Lock()
	var victim *conn
	for try := 0; try < 8 && len(r.conns) > 0; try++ {
		cand := r.conns[rng.IntN(len(r.conns))]
		// A victim of an earlier churn stays ready until its reader sees
		// the kill; picking it again would start a second replacement.
		if cand.state.Load() == stReady && !cand.churned.Load() {
			victim = cand
			break
		}
	}
	if victim == nil {
		r.mu.Unlock()
		return
	}
	r.churnSeq++
	seq := r.churnSeq
	r.mu.Unlock()
	victim.churned.Store(true)
	victim.kill(stopChurn, true)
	r.churned.Add(1)
	c, err := r.newConn(victim.idx, fmt.Sprintf("lt-churn-%d-%d", r.plan.Index, seq), victim.sub.ch)
	if err != nil {
		r.errs.add("churn: token", err)
		return
	}
	r.mu.Lock()
	r.conns = append(r.conns, c)
	r.mu.Unlock()
	r.attempted.Add(1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c.run(r.ctx, nil)
	}()
}

// dropSome abruptly closes DropFraction of the ready subscribers; they come
// back after ReconnectDelay and resubscribe with recover.
func (r *runner) dropSome(rng *rand.Rand) {
	r.mu.Lock()
	var ready []*conn
	for _, c := range r.conns {
		if c.state.Load() == stReady {
			ready = append(ready, c)
		}
	}
	r.mu.Unlock()
	n := int(float64(len(ready)) * r.cfg.DropFraction)
	rng.Shuffle(len(ready), func(i, j int) { ready[i], ready[j] = ready[j], ready[i] })
	for _, c := range ready[:n] {
		c.kill(stopDrop, false)
		r.dropped.Add(1)
	}
}

// finish closes every connection, waits for their goroutines and returns
// the process's report.
func (r *runner) finish() *report {
	r.mu.Lock()
	all := append(append([]*conn(nil), r.pubs...), r.conns...)
	r.mu.Unlock()
	readyAtEnd := 0
	for _, c := range all {
		// A churned connection may not have seen its kill yet while its
		// replacement is already ready: it is not counted.
		if c.state.Load() == stReady && !c.churned.Load() {
			readyAtEnd++
		}
	}
	for _, c := range all {
		c.kill(stopOnEnd, true)
	}
	r.cancel()
	r.wg.Wait()
	if r.reactors != nil {
		r.reactors.close() // every session has returned: nothing is registered
	}
	r.mu.Lock()
	r.readyPeak = max(r.readyPeak, readyAtEnd)
	r.mu.Unlock()
	rep := r.report(all)
	rep.ReadyAtEnd = readyAtEnd
	return rep
}

// progress is a cumulative snapshot, sent by workers every second.
type progress struct {
	Ready     int     `json:"ready"`
	Attempted uint64  `json:"attempted"`
	Delivered uint64  `json:"delivered"`
	Published uint64  `json:"published"`
	Acked     uint64  `json:"acked"`
	Errors    uint64  `json:"errors"`
	CPU       float64 `json:"cpu"` // seconds of CPU used by this process
}

func (r *runner) progress() progress {
	r.mu.Lock()
	conns := r.conns
	pubs := r.pubs
	r.mu.Unlock()
	var p progress
	for _, list := range [][]*conn{pubs, conns} {
		for _, c := range list {
			if c.state.Load() == stReady && !c.churned.Load() {
				p.Ready++
			}
			p.Delivered += c.delivered.Load()
			p.Published += c.published.Load()
		}
	}
	r.mu.Lock()
	r.readyPeak = max(r.readyPeak, p.Ready)
	r.mu.Unlock()
	p.Attempted = r.attempted.Load()
	p.Acked = r.acked.Load()
	p.Errors = r.errs.total()
	p.CPU = selfCPU()
	return p
}

// chanAgg is the delivery accounting of one channel in one process.
type chanAgg struct {
	Subs      uint64 `json:"subs"`       // subscriptions counted to the end
	SumStart  uint64 `json:"sum_start"`  // sum of their start offsets
	Unique    uint64 `json:"unique"`     // distinct seqs they received
	Ended     uint64 `json:"ended"`      // subscriptions ended on purpose (churn, server unsubscribe)
	EndedGap  uint64 `json:"ended_gap"`  // seqs those missed before ending
	EndedUniq uint64 `json:"ended_uniq"` // distinct seqs those received
	Dup       uint64 `json:"dup"`
	OOO       uint64 `json:"ooo"`
	Stale     uint64 `json:"stale"`
	MaxSeen   uint64 `json:"max_seen"`
	PreRun    bool   `json:"pre_run"` // some subscription started before publishing
	PreRunMin uint64 `json:"pre_run_min"`
	Acked     uint64 `json:"acked"` // publications acked by the server
}

// report is what one process contributes to the result.
type report struct {
	Hists      map[string]*Histogram `json:"hists"`
	Counters   map[string]uint64     `json:"counters"`
	Chans      []chanAgg             `json:"chans"`
	Errors     map[string]uint64     `json:"errors"`
	Samples    []string              `json:"samples"`
	Final      progress              `json:"final"`
	ReadyPeak  int                   `json:"ready_peak"`
	ReadyAtEnd int                   `json:"ready_at_end"`
}

func (r *runner) report(all []*conn) *report {
	rep := &report{
		Hists: map[string]*Histogram{
			"connect": r.connectLat.Snapshot(), "subscribe": r.subscribeLat.Snapshot(),
			"publish_ack": r.ackLat.Snapshot(), "publish_to_delivery": r.e2eLat.Snapshot(),
		},
		Chans: make([]chanAgg, len(r.channels)),
	}
	rep.Final = r.progress()
	rep.ReadyPeak = r.readyPeak
	for _, c := range all {
		s := c.sub
		if s == nil || !s.tr.started {
			continue
		}
		a := &rep.Chans[s.ch]
		t := &s.tr
		a.Dup += t.dup
		a.OOO += t.ooo
		a.Stale += t.stale
		a.MaxSeen = max(a.MaxSeen, t.last)
		if s.preRun {
			if !a.PreRun || t.start < a.PreRunMin {
				a.PreRunMin = t.start
			}
			a.PreRun = true
		}
		if s.ended || c.churned.Load() {
			a.Ended++
			a.EndedGap += t.gaps()
			a.EndedUniq += t.unique
			continue
		}
		a.Subs++
		a.SumStart += t.start
		a.Unique += t.unique
	}
	for i := range rep.Chans {
		rep.Chans[i].Acked = r.ackedPerChan[i].Load()
	}
	rep.Counters = map[string]uint64{
		"attempted": r.attempted.Load(), "connected": r.connectedOK.Load(), "connect_failed": r.connectFailed.Load(),
		"acked": r.acked.Load(), "publish_errors": r.pubErrors.Load(),
		"publish_skipped": r.pubSkipped.Load(), "unacked": r.unacked.Load(), "publish_behind": r.behind.Load(),
		"reconnects": r.reconnects.Load(), "resubscribed": r.resubscribed.Load(), "recovered": r.recovered.Load(),
		"not_recovered": r.notRecovered.Load(), "epoch_changed": r.epochChanged.Load(),
		"recovered_pubs": r.recoveredPubs.Load(), "no_offset": r.noOffset.Load(),
		"before_subscribe": r.beforeSubscribe.Load(), "unexpected_pubs": r.unexpectedPubs.Load(),
		"malformed": r.malformed.Load(), "server_unsubscribes": r.serverUnsubs.Load(),
		"dropped_by_hook": r.droppedByHook.Load(), "dropped": r.dropped.Load(), "churned": r.churned.Load(),
	}
	rep.Errors, rep.Samples = r.errs.snapshot()
	return rep
}

// errCounter counts failures by kind and keeps a few sample messages.
type errCounter struct {
	mu      sync.Mutex
	counts  map[string]uint64
	samples []string
	n       atomic.Uint64
}

const maxErrorSamples = 10

func newErrCounter() *errCounter { return &errCounter{counts: map[string]uint64{}} }

func (e *errCounter) add(kind string, err error) {
	e.n.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[kind]++
	if e.counts[kind] == 1 && len(e.samples) < maxErrorSamples && err != nil {
		e.samples = append(e.samples, kind+": "+err.Error())
	}
}

func (e *errCounter) total() uint64 { return e.n.Load() }

func (e *errCounter) snapshot() (map[string]uint64, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := make(map[string]uint64, len(e.counts))
	for k, v := range e.counts {
		m[k] = v
	}
	s := append([]string(nil), e.samples...)
	sort.Strings(s)
	return m, s
}
