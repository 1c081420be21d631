package aggregator

import (
	"math"
	"slices"
	"strconv"
)

// RTT percentiles come from a histogram of each up host's average RTT, kept
// in the batch's rtt hash (bucket number -> hosts), so that their cost in
// memory and time does not grow with the batch. Bucket i holds RTTs in
// (rttGamma^(i-1), rttGamma^i] nanoseconds and stands for the value
// 2*rttGamma^i/(1+rttGamma): within (rttGamma-1)/(rttGamma+1), 0.5 %, of
// any RTT in it. RTTs from 1 µs to a minute take at most 1,800 buckets; a
// batch's usually take a few dozen.
const rttGamma = 1.01

var logGamma = math.Log(rttGamma)

// rttBucket is the histogram bucket of an RTT of ns nanoseconds.
func rttBucket(ns int64) int {
	if ns <= 1 {
		return 0
	}
	return int(math.Ceil(math.Log(float64(ns)) / logGamma))
}

// bucketValue is the RTT, in nanoseconds, that bucket i stands for.
func bucketValue(i int) float64 {
	return 2 * math.Pow(rttGamma, float64(i)) / (1 + rttGamma)
}

// percentiles returns the nearest-rank percentiles ps of the RTTs counted
// in hist (bucket number -> count), in milliseconds, none above maxNs.
func percentiles(hist map[string]string, maxNs int64, ps ...float64) []float64 {
	type bucket struct {
		i int
		n int64
	}
	var buckets []bucket
	var total int64
	for k, v := range hist {
		i, err1 := strconv.Atoi(k)
		n, err2 := strconv.ParseInt(v, 10, 64)
		if err1 != nil || err2 != nil || n <= 0 {
			continue
		}
		buckets = append(buckets, bucket{i, n})
		total += n
	}
	out := make([]float64, len(ps))
	if total == 0 {
		return out
	}
	slices.SortFunc(buckets, func(a, b bucket) int { return a.i - b.i })
	for j, p := range ps {
		r := max(int64(math.Ceil(p*float64(total))), 1) // 1-based rank
		var seen int64
		for _, b := range buckets {
			seen += b.n
			if seen >= r {
				out[j] = math.Round(min(bucketValue(b.i), float64(maxNs))) / 1e6 // whole ns
				break
			}
		}
	}
	return out
}
