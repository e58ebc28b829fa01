package loadtest

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

func TestBucketRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := []int64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<40 + 12345, math.MaxInt64}
	for range 10000 {
		vals = append(vals, rng.Int64N(1<<uint(rng.IntN(62)+1)))
	}
	for _, v := range vals {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, i)
		}
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d not in bucket %d range [%d,%d]", v, i, lo, hi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d bounds [%d,%d] map to %d,%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if v >= exactLimit && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-9 {
			t.Fatalf("bucket %d too wide: [%d,%d]", i, lo, hi)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	t.Run("exact small values", func(t *testing.T) {
		var h Histogram
		for v := int64(1); v <= 100; v++ {
			h.Record(v)
		}
		for _, c := range []struct {
			q    float64
			want int64
		}{{0.5, 50}, {0.9, 90}, {0.99, 99}, {0.999, 100}, {1, 100}, {0, 1}} {
			if got := h.Quantile(c.q); got != c.want {
				t.Errorf("Quantile(%v) = %d, want %d", c.q, got, c.want)
			}
		}
		if h.Min() != 1 || h.Max() != 100 || h.Mean() != 50.5 || h.Count() != 100 {
			t.Errorf("min %d max %d mean %v count %d", h.Min(), h.Max(), h.Mean(), h.Count())
		}
	})
	t.Run("uniform within 1 percent", func(t *testing.T) {
		var h Histogram
		const n = 1_000_000
		for v := int64(1); v <= n; v++ {
			h.Record(v * 1000) // 1 µs … 1 s in ns
		}
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			want := q * n * 1000
			got := float64(h.Quantile(q))
			if math.Abs(got-want)/want > 0.01 {
				t.Errorf("Quantile(%v) = %v, want %v ±1%%", q, got, want)
			}
		}
		if h.Quantile(1) != n*1000 {
			t.Errorf("max = %d", h.Quantile(1))
		}
	})
	t.Run("empty and negative", func(t *testing.T) {
		var h Histogram
		if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.CDF() != nil {
			t.Fatal("empty histogram not zero")
		}
		h.Record(-5)
		if h.Max() != 0 || h.Count() != 1 {
			t.Fatalf("negative not clamped: max %d", h.Max())
		}
	})
}

func TestHistogramMergeJSONAtomic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var a, b, all Histogram
	at := new(AtomicHistogram)
	for i := range 50000 {
		v := int64(rng.ExpFloat64() * 5e6)
		all.Record(v)
		at.Record(i, v)
		if i%2 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(&b)
	snap := at.Snapshot()
	raw, err := json.Marshal(&a)
	if err != nil {
		t.Fatal(err)
	}
	var decoded Histogram
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]*Histogram{"merged": &a, "atomic": snap, "json": &decoded} {
		if h.Count() != all.Count() || h.Min() != all.Min() || h.Max() != all.Max() {
			t.Errorf("%s: count/min/max %d/%d/%d, want %d/%d/%d", name, h.Count(), h.Min(), h.Max(), all.Count(), all.Min(), all.Max())
		}
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			if h.Quantile(q) != all.Quantile(q) {
				t.Errorf("%s: Quantile(%v) = %d, want %d", name, q, h.Quantile(q), all.Quantile(q))
			}
		}
	}
	cdf := all.CDF()
	if len(cdf) == 0 || cdf[len(cdf)-1].Fraction != 1 || cdf[len(cdf)-1].Value != all.Max() {
		t.Errorf("CDF end %+v", cdf[len(cdf)-1])
	}
	if err := json.Unmarshal([]byte(`{"n":2,"buckets":[[1,1]]}`), &decoded); err == nil {
		t.Error("inconsistent histogram JSON accepted")
	}
}

func BenchmarkAtomicHistogramRecord(b *testing.B) {
	h := new(AtomicHistogram)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h.Record(i, int64(i)*997)
			i++
		}
	})
}
