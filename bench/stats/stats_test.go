package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestRatiosPairByPair(t *testing.T) {
	r := Ratios([]float64{2, 9, 4}, []float64{4, 3})
	if len(r) != 2 || r[0] != 0.5 || r[1] != 3 {
		t.Fatalf("Ratios = %v, want [0.5 3] (pairs bounded by the shorter side)", r)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := Median(c.v); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.v, got, c.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

// The same samples and seed give the same interval (the report must not
// change when regenerated from the same CSVs); another seed moves the
// ends only a little.
func TestMedianCIDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	v := make([]float64, 100)
	for i := range v {
		v[i] = 0.8 + 0.2*rng.NormFloat64()
	}
	a, b := MedianCI(v, 0.95, 42), MedianCI(v, 0.95, 42)
	if a != b {
		t.Fatalf("same seed, different intervals: %+v and %+v", a, b)
	}
	if !(a.Lo <= a.Median && a.Median <= a.Hi) || a.Lo >= a.Hi {
		t.Fatalf("interval %+v does not bracket its median", a)
	}
	c := MedianCI(v, 0.95, 43)
	if math.Abs(c.Lo-a.Lo) > 0.02 || math.Abs(c.Hi-a.Hi) > 0.02 {
		t.Errorf("seed 42 %+v and 43 %+v differ by more than resampling noise", a, c)
	}
}

// Coverage: for samples from a distribution whose median is known, about
// 95 % of the 95 % intervals hold it. Skewed (log-normal, as latencies
// are) with n = 100, as the launch benchmark's pairs. Seeded, so the
// count is fixed; the bounds leave room for the percentile bootstrap's
// known slight under-coverage at this size. 2000 resamples per interval
// keep the test quick; the coverage does not depend on that count.
func TestMedianCICoverage(t *testing.T) {
	const trials, n = 300, 100
	rng := rand.New(rand.NewPCG(7, 7))
	trueMedian := math.Exp(0) // median of exp(N(0, 0.5))
	hit := 0
	for i := range trials {
		v := make([]float64, n)
		for j := range v {
			v[j] = math.Exp(0.5 * rng.NormFloat64())
		}
		ci := medianCI(v, 0.95, uint64(i), 2000)
		if ci.Lo <= trueMedian && trueMedian <= ci.Hi {
			hit++
		}
	}
	if cov := float64(hit) / trials; cov < 0.90 || cov > 0.99 {
		t.Errorf("coverage %.3f, want about 0.95", cov)
	}
}

// Width: for n normal samples the median's standard error is about
// 1.2533 σ/√n, so a 95 % interval is about 2·1.96·1.2533 σ/√n wide.
func TestMedianCIWidth(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	v := make([]float64, 400)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	ci := MedianCI(v, 0.95, 1)
	want := 2 * 1.96 * 1.2533 / math.Sqrt(float64(len(v)))
	if w := ci.Hi - ci.Lo; w < 0.6*want || w > 1.5*want {
		t.Errorf("width %.3f, want about %.3f", w, want)
	}
}

func TestMeets(t *testing.T) {
	if !(CI{Median: 0.6, Lo: 0.5, Hi: 0.7}).Meets(0.7) {
		t.Error("upper end at the limit does not meet it")
	}
	if (CI{Median: 0.6, Lo: 0.5, Hi: 0.71}).Meets(0.7) {
		t.Error("upper end above the limit meets it (the median alone would)")
	}
	if MedianCI([]float64{0.1, 0.1, 0.1, 0.1}, 0.95, 1).Meets(1) {
		t.Error("four samples, no interval, yet it meets the goal")
	}
	if ci := MedianCI([]float64{2, 2, 2, 2, 2}, 0.95, 1); ci.Lo != 2 || ci.Hi != 2 {
		t.Errorf("constant samples: %+v, want [2, 2]", ci)
	}
}
