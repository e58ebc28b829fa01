package loadtest

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
)

// Log-linear histogram in the spirit of HdrHistogram: values below 2^(subBits+1)
// are counted exactly, above that every power of two is split into 2^subBits
// equal sub-buckets, so a recorded value is known to within 1/2^subBits
// (0.8 %) of itself. Values are int64 nanoseconds; negatives count as 0.
const (
	subBits    = 7
	subCount   = 1 << subBits                     // sub-buckets per power of two
	exactLimit = 1 << (subBits + 1)               // values below this are exact
	numBuckets = subCount*(63-subBits) + subCount // enough for math.MaxInt64
)

func bucketOf(v int64) int {
	if v < exactLimit {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - (subBits + 1)
	return subCount*shift + int(uint64(v)>>uint(shift))
}

// bucketRange returns the lowest and highest value counted in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < exactLimit {
		return int64(i), int64(i)
	}
	shift := i/subCount - 1
	m := int64(i - subCount*shift)
	lo = m << uint(shift)
	return lo, lo + (int64(1) << uint(shift)) - 1
}

// Histogram is a plain (single-goroutine) log-linear histogram. The zero
// value is empty and ready to use.
type Histogram struct {
	counts []uint64 // allocated on first Record/Merge
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// Record adds one value.
func (h *Histogram) Record(v int64) { h.RecordN(v, 1) }

// RecordN adds value v n times.
func (h *Histogram) RecordN(v int64, n uint64) {
	if n == 0 {
		return
	}
	if v < 0 {
		v = 0
	}
	if h.counts == nil {
		h.counts = make([]uint64, numBuckets)
	}
	h.counts[bucketOf(v)] += n
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n += n
	h.sum += float64(v) * float64(n)
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest recorded value (0 when empty).
func (h *Histogram) Max() int64 { return h.max }

// Min returns the smallest recorded value (0 when empty).
func (h *Histogram) Min() int64 { return h.min }

// Mean returns the exact mean of the recorded values.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value at quantile q (0..1): the highest value of the
// bucket holding the ceil(q·n)-th value, clamped to [min, max]. Quantile(1)
// is the exact maximum.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	if q < 0 {
		q = 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			return min(max(hi, h.min), h.max)
		}
	}
	return h.max
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, numBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// CDFPoint is one point of a cumulative distribution: the fraction of values
// at or below Value.
type CDFPoint struct {
	Value    int64
	Fraction float64
}

// CDF returns one point per non-empty bucket (at the bucket's high value).
func (h *Histogram) CDF() []CDFPoint {
	if h.n == 0 {
		return nil
	}
	var out []CDFPoint
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		_, hi := bucketRange(i)
		out = append(out, CDFPoint{Value: min(max(hi, h.min), h.max), Fraction: float64(seen) / float64(h.n)})
	}
	return out
}

// histJSON is the sparse wire form of a Histogram: [bucket, count] pairs.
type histJSON struct {
	N       uint64      `json:"n"`
	Sum     float64     `json:"sum"`
	Min     int64       `json:"min"`
	Max     int64       `json:"max"`
	Buckets [][2]uint64 `json:"buckets,omitempty"`
}

// MarshalJSON encodes the histogram sparsely, so workers can ship it to the
// parent losslessly.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	j := histJSON{N: h.n, Sum: h.sum, Min: h.min, Max: h.max}
	for i, c := range h.counts {
		if c != 0 {
			j.Buckets = append(j.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the form MarshalJSON writes.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var j histJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*h = Histogram{n: j.N, sum: j.Sum, min: j.Min, max: j.Max}
	if len(j.Buckets) > 0 {
		h.counts = make([]uint64, numBuckets)
	}
	var total uint64
	for _, bc := range j.Buckets {
		if bc[0] >= numBuckets {
			return fmt.Errorf("histogram bucket %d out of range", bc[0])
		}
		h.counts[bc[0]] += bc[1]
		total += bc[1]
	}
	if total != h.n {
		return fmt.Errorf("histogram count %d does not match its buckets (%d)", h.n, total)
	}
	return nil
}

// AtomicHistogram is a Histogram many goroutines record into at once without a
// lock; it is sharded so that recorders on different connections rarely
// touch the same cache lines. Snapshot merges the shards.
type AtomicHistogram struct {
	shards [histShards]atomicShard
}

const histShards = 8

type atomicShard struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // sum of values, wraps only after 584 years of ns
	min    atomic.Int64  // stored as value+1 so that 0 means "unset"
	max    atomic.Int64
}

// Record adds v to the shard picked by key (e.g. a connection index).
func (a *AtomicHistogram) Record(key int, v int64) {
	if v < 0 {
		v = 0
	}
	s := &a.shards[uint(key)%histShards]
	s.counts[bucketOf(v)].Add(1)
	s.n.Add(1)
	s.sum.Add(uint64(v))
	for {
		cur := s.min.Load()
		if cur != 0 && cur-1 <= v || s.min.CompareAndSwap(cur, v+1) {
			break
		}
	}
	for {
		cur := s.max.Load()
		if cur >= v || s.max.CompareAndSwap(cur, v) {
			break
		}
	}
}

// Snapshot returns the merged contents as a plain Histogram. Values recorded
// concurrently may or may not be included.
func (a *AtomicHistogram) Snapshot() *Histogram {
	h := &Histogram{}
	for i := range a.shards {
		s := &a.shards[i]
		n := s.n.Load()
		if n == 0 {
			continue
		}
		if h.counts == nil {
			h.counts = make([]uint64, numBuckets)
		}
		var total uint64
		for b := range s.counts {
			c := s.counts[b].Load()
			h.counts[b] += c
			total += c
		}
		mn := s.min.Load() - 1
		if h.n == 0 || mn < h.min {
			h.min = mn
		}
		h.max = max(h.max, s.max.Load())
		h.n += total
		h.sum += float64(s.sum.Load())
	}
	return h
}
