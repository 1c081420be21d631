package aggregator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// A host's result is stored as one short line of text rather than JSON: a
// finished batch keeps one such line per host, so its size is most of the
// batch's memory in Redis (about 110 bytes per host with the hash entry,
// against 330 for the JSON and its copy in the event stream before).
//
//	seq,worker,status,sent,received,min,avg,max,stddev,ttl,attempts,started,took,ip[|name][;rtts][,error]
//
// seq is the order in which the result was counted (1 for the batch's first)
// and worker the number the batch gave the worker's name (see the workers
// key); the record script writes both. The rest is encodeResult's: status
// u, d or e; RTTs in nanoseconds; started in Unix milliseconds and took
// the milliseconds from it to the end (nothing: no end time); ip is empty (none), "=" (the host itself) or
// "<length>:<address>". The address's reverse name, if the batch asked for
// names, follows after a bar (a DNS name holds no bar, semicolon or comma:
// the worker drops any other). Each request's RTT, if the batch keeps them, comes
// next, after a semicolon: nanoseconds or "-" (lost), space-separated. The
// error text, if any, comes last, after a comma, and may hold anything.
// Zeros are written as nothing.

// encodeResult returns r from its status on, as the record script stores
// it after the sequence number and the worker's number. Times are kept to
// the millisecond and RTTs to the nanosecond: the worker measures RTTs as
// durations, so nothing it records is lost.
func encodeResult(r Result) []byte {
	b := make([]byte, 0, 64+len(r.Error))
	switch r.Status {
	case StatusUp:
		b = append(b, 'u')
	case StatusDown:
		b = append(b, 'd')
	default:
		b = append(b, 'e')
	}
	num := func(v int64) {
		b = append(b, ',')
		if v != 0 {
			b = strconv.AppendInt(b, v, 10)
		}
	}
	num(int64(r.Sent))
	num(int64(r.Received))
	for _, ms := range []float64{r.RTTMin, r.RTTAvg, r.RTTMax, r.RTTStdev} {
		num(msToNs(ms))
	}
	num(int64(r.ReplyTTL))
	num(int64(r.Attempts))
	var started int64
	if !r.Started.IsZero() {
		started = r.Started.UnixMilli()
	}
	num(started)
	b = append(b, ',')
	if !r.Finished.IsZero() { // "0", not nothing, when it took no time
		b = strconv.AppendInt(b, r.Finished.UnixMilli()-started, 10)
	}
	b = append(b, ',')
	switch r.IP {
	case "":
	case r.Host:
		b = append(b, '=')
	default:
		b = strconv.AppendInt(b, int64(len(r.IP)), 10)
		b = append(b, ':')
		b = append(b, r.IP...)
	}
	if r.Name != "" {
		b = append(b, '|')
		b = append(b, r.Name...)
	}
	if r.RTTs != nil {
		b = append(b, ';')
		for i, ms := range r.RTTs {
			if i > 0 {
				b = append(b, ' ')
			}
			if ms < 0 {
				b = append(b, '-')
			} else {
				b = strconv.AppendInt(b, msToNs(ms), 10)
			}
		}
	}
	if r.Error != "" {
		b = append(b, ',')
		b = append(b, r.Error...)
	}
	return b
}

// msToNs turns milliseconds into whole nanoseconds.
func msToNs(ms float64) int64 {
	if ms == 0 || math.IsNaN(ms) || math.IsInf(ms, 0) {
		return 0
	}
	return int64(math.Round(ms * 1e6))
}

func nsToMs(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }

var errBadRecord = errors.New("malformed result record")

// decodeResult reads a stored result of host; workers names the batch's
// workers by number. Records written as JSON by earlier versions are read
// too. It returns the record's sequence number (0 for JSON records).
func decodeResult(host, v string, workers map[string]string) (Result, int64, error) {
	if strings.HasPrefix(v, "{") {
		r := Result{Host: host}
		err := json.Unmarshal([]byte(v), &r)
		return r, 0, err
	}
	const fixed = 13 // fields before the address
	var f [fixed]string
	rest := v
	for i := range fixed {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, ",")
		if !ok {
			return Result{}, 0, fmt.Errorf("%w %q: %d fields", errBadRecord, v, i+1)
		}
	}
	var nums [fixed]int64
	for i, s := range f {
		if i == 1 || i == 2 || s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return Result{}, 0, fmt.Errorf("%w %q: field %d", errBadRecord, v, i+1)
		}
		nums[i] = n
	}
	r := Result{Host: host, Worker: workers[f[1]]}
	switch f[2] {
	case "u":
		r.Status = StatusUp
	case "d":
		r.Status = StatusDown
	case "e":
		r.Status = StatusError
	default:
		return Result{}, 0, fmt.Errorf("%w %q: status %q", errBadRecord, v, f[2])
	}
	r.Sent, r.Received = int(nums[3]), int(nums[4])
	r.LossPct = LossPct(r.Sent, r.Received)
	r.RTTMin, r.RTTAvg, r.RTTMax, r.RTTStdev = nsToMs(nums[5]), nsToMs(nums[6]), nsToMs(nums[7]), nsToMs(nums[8])
	r.ReplyTTL, r.Attempts = int(nums[9]), int(nums[10])
	if nums[11] != 0 {
		r.Started = time.UnixMilli(nums[11]).UTC()
	}
	if f[12] != "" {
		r.Finished = time.UnixMilli(nums[11] + nums[12]).UTC()
	}
	switch {
	case strings.HasPrefix(rest, "="):
		r.IP, rest = host, rest[1:]
	case rest != "" && rest[0] >= '0' && rest[0] <= '9':
		ls, tail, ok := strings.Cut(rest, ":")
		n, err := strconv.Atoi(ls)
		if !ok || err != nil || n > len(tail) {
			return Result{}, 0, fmt.Errorf("%w %q: address", errBadRecord, v)
		}
		r.IP, rest = tail[:n], tail[n:]
	}
	if strings.HasPrefix(rest, "|") {
		end := strings.IndexAny(rest, ";,")
		if end < 0 {
			end = len(rest)
		}
		r.Name, rest = rest[1:end], rest[end:]
	}
	if strings.HasPrefix(rest, ";") {
		list, tail := rest[1:], ""
		if i := strings.IndexByte(list, ','); i >= 0 {
			list, tail = list[:i], list[i:] // the error follows
		}
		r.RTTs = []float64{}
		for _, s := range strings.Fields(list) {
			if s == "-" {
				r.RTTs = append(r.RTTs, -1)
				continue
			}
			ns, err := strconv.ParseInt(s, 10, 64)
			if err != nil || ns < 0 {
				return Result{}, 0, fmt.Errorf("%w %q: RTTs", errBadRecord, v)
			}
			r.RTTs = append(r.RTTs, nsToMs(ns))
		}
		rest = tail
	}
	switch {
	case rest == "":
	case rest[0] == ',':
		r.Error = rest[1:]
	default:
		return Result{}, 0, fmt.Errorf("%w %q: after the address", errBadRecord, v)
	}
	return r, nums[0], nil
}
