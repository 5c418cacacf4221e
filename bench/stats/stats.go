// Package stats holds the statistics behind BENCHMARKS.md's ratio goals.
// On a shared 2-core VM one launch can take twice as long as the next, so
// a ratio of two medians taken over separate runs moves from run to run
// (issue 15: 0.66× to 1.07× for the same code on one day). Instead the
// benchmarks time the two commands in alternating pairs (A B A B ...), a
// ratio is taken per pair, so a slow moment of the machine weighs on both
// sides of that ratio, and the goal is judged on the upper end of a 95 %
// bootstrap confidence interval of the median ratio: a goal passes only
// when it would still pass at the unlucky end of what the data allow.
package stats

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Ratios returns a[i]/b[i] for every pair. The slices hold the two sides
// of the same pairs, in order; the shorter one bounds the pairs.
func Ratios(a, b []float64) []float64 {
	n := min(len(a), len(b))
	r := make([]float64, 0, n)
	for i := range n {
		r = append(r, a[i]/b[i])
	}
	return r
}

// Median of v (the mean of the middle two for an even count); NaN when v
// is empty.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return sortedMedian(s)
}

func sortedMedian(s []float64) float64 {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// CI is a median with a confidence interval around it.
type CI struct {
	Median, Lo, Hi float64
	N              int // samples (pairs)
}

// Resamples is how many bootstrap resamples MedianCI draws: enough that
// the 2.5 % and 97.5 % percentiles of the resampled medians move by far
// less than the interval is wide when the seed changes.
const Resamples = 10000

// MinSamples is the fewest samples MedianCI makes an interval from: with
// fewer, a resample can only repeat a handful of values and the
// percentile interval covers far less often than it says (a validation
// run with RUNS=2 must not print a confident-looking interval).
const MinSamples = 5

// MedianCI is the percentile bootstrap of the median: draw len(v) values
// from v with replacement, take their median, Resamples times; the
// interval spans the (1-level)/2 and (1+level)/2 quantiles of those
// medians (level 0.95 for a 95 % interval). The seed makes the interval
// reproducible: the same CSV gives the same report. With fewer than
// MinSamples samples there is no interval: Lo and Hi are NaN.
func MedianCI(v []float64, level float64, seed uint64) CI {
	return medianCI(v, level, seed, Resamples)
}

func medianCI(v []float64, level float64, seed uint64, resamples int) CI {
	ci := CI{Median: Median(v), Lo: math.NaN(), Hi: math.NaN(), N: len(v)}
	if len(v) < MinSamples {
		return ci
	}
	rng := rand.New(rand.NewPCG(seed, 0x636d67)) // fixed stream, so only the seed varies it
	meds := make([]float64, resamples)
	buf := make([]float64, len(v))
	for i := range meds {
		for j := range buf {
			buf[j] = v[rng.IntN(len(v))]
		}
		sort.Float64s(buf)
		meds[i] = sortedMedian(buf)
	}
	sort.Float64s(meds)
	ci.Lo = quantile(meds, (1-level)/2)
	ci.Hi = quantile(meds, (1+level)/2)
	return ci
}

// quantile of sorted s by linear interpolation between closest ranks.
func quantile(s []float64, q float64) float64 {
	pos := q * float64(len(s)-1)
	i := int(math.Floor(pos))
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	f := pos - float64(i)
	return s[i]*(1-f) + s[i+1]*f
}

// Meets says whether a ratio goal "≤ limit" holds for certain enough: the
// interval's upper end is at or under the limit. Without an interval (too
// few pairs) it does not.
func (c CI) Meets(limit float64) bool {
	return !math.IsNaN(c.Hi) && c.Hi <= limit
}
