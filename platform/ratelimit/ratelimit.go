// Package ratelimit limits request rates with GCRA (the generic cell rate
// algorithm, a token bucket kept as one timestamp per key). The buckets live
// in Redis, so every instance shares them, and each decision is one script
// call: one round trip. While Redis cannot be reached, each instance decides
// from buckets of its own with the same limits, and goes back to Redis as
// soon as it answers again.
package ratelimit

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limit is a rate: Rate requests per Period, of which up to Rate may come at
// once (the bucket holds Rate). A zero Limit is no limit.
type Limit struct {
	Rate   int
	Period time.Duration
}

// PerMinute is n requests a minute (n <= 0: no limit).
func PerMinute(n int) Limit {
	if n <= 0 {
		return Limit{}
	}
	return Limit{Rate: n, Period: time.Minute}
}

// Unlimited reports whether l limits nothing.
func (l Limit) Unlimited() bool { return l.Rate <= 0 || l.Period <= 0 }

// interval is the time one request takes from the bucket, in microseconds
// (at least one).
func (l Limit) interval() int64 {
	return max(l.Period.Microseconds()/int64(l.Rate), 1)
}

// Decision is the answer for one request.
type Decision struct {
	Allowed bool
	// Limit is the bucket's size (Limit.Rate).
	Limit int
	// Remaining is how many more requests the bucket admits now.
	Remaining int
	// RetryAfter is, when refused, how long until one request is admitted.
	RetryAfter time.Duration
	// ResetAfter is how long until the bucket is full again.
	ResetAfter time.Duration
	// Local is true when the decision came from this instance's own
	// buckets because Redis could not be reached.
	Local bool
}

// gcra is the algorithm, on microseconds: tat is the bucket's theoretical
// arrival time (0: empty key). It returns the decision and the new tat to
// store (0: nothing to store).
func gcra(now, tat int64, l Limit) (Decision, int64) {
	interval := l.interval()
	burst := interval * int64(l.Rate)
	tat = max(tat, now)
	next := tat + interval
	diff := now - (next - burst)
	d := Decision{Limit: l.Rate}
	if diff < 0 {
		d.RetryAfter = time.Duration(-diff) * time.Microsecond
		d.ResetAfter = time.Duration(tat-now) * time.Microsecond
		return d, 0
	}
	d.Allowed = true
	d.Remaining = int(diff / interval)
	d.ResetAfter = time.Duration(next-now) * time.Microsecond
	return d, next
}

// script is gcra in Lua, run by Redis on the bucket's key. ARGV: now in
// microseconds ("" = Redis's own clock), interval and rate. It returns
// {allowed, remaining, retry_after_us, reset_after_us}.
//
//go:embed gcra.lua
var scriptSource string

var script = redis.NewScript(scriptSource)

// Limiter decides requests against buckets in Redis (or, while Redis is
// unreachable, in process).
type Limiter struct {
	rdb    redis.Scripter
	prefix string
	log    *slog.Logger
	// Now, when set, is the clock (tests); otherwise Redis's own clock is
	// used, so instances with skewed clocks still agree.
	Now func() time.Time
	// OnFallback is told when the limiter starts (true) or stops (false)
	// deciding locally.
	OnFallback func(local bool)

	local    localBuckets
	fallback atomic.Bool
}

// New returns a limiter whose buckets are Redis keys under prefix.
func New(rdb redis.Scripter, prefix string, log *slog.Logger) *Limiter {
	return &Limiter{rdb: rdb, prefix: prefix, log: log, local: localBuckets{m: map[string]int64{}}}
}

// Local reports whether the limiter is deciding from its own buckets.
func (l *Limiter) Local() bool { return l.fallback.Load() }

// Allow takes one request from key's bucket. It never fails: when Redis
// does not answer in time (ctx's deadline, or the client's own), the
// decision is local.
func (l *Limiter) Allow(ctx context.Context, key string, lim Limit) Decision {
	if lim.Unlimited() {
		return Decision{Allowed: true}
	}
	now := "" // Redis's own clock
	if l.Now != nil {
		now = strconv.FormatInt(l.Now().UnixMicro(), 10)
	}
	res, err := script.Run(ctx, l.rdb, []string{l.prefix + key}, now, lim.interval(), lim.Rate).Int64Slice()
	if err == nil && len(res) == 4 {
		l.setFallback(false, nil)
		return Decision{Allowed: res[0] == 1, Limit: lim.Rate, Remaining: int(res[1]),
			RetryAfter: time.Duration(res[2]) * time.Microsecond, ResetAfter: time.Duration(res[3]) * time.Microsecond}
	}
	if err == nil {
		err = fmt.Errorf("unexpected script answer %v", res)
	}
	if ctx.Err() == nil { // a caller that gave up says nothing about Redis
		l.setFallback(true, err)
	}
	at := time.Now()
	if l.Now != nil {
		at = l.Now()
	}
	d := l.local.allow(at.UnixMicro(), key, lim)
	d.Local = true
	return d
}

func (l *Limiter) setFallback(local bool, err error) {
	if l.fallback.Swap(local) == local {
		return
	}
	if local {
		l.log.Warn("rate limits decided in process: Redis does not answer", "error", err.Error())
	} else {
		l.log.Info("rate limits back on Redis")
	}
	if l.OnFallback != nil {
		l.OnFallback(local)
	}
}

// maxLocalBuckets bounds the in-process buckets; when full, the ones that
// are full again (forgotten by Redis too) are dropped, then all of them.
const maxLocalBuckets = 100_000

type localBuckets struct {
	mu sync.Mutex
	m  map[string]int64 // key -> tat, microseconds
}

func (b *localBuckets) allow(now int64, key string, lim Limit) Decision {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, tat := gcra(now, b.m[key], lim)
	if tat != 0 {
		if len(b.m) >= maxLocalBuckets {
			for k, t := range b.m {
				if t <= now {
					delete(b.m, k)
				}
			}
			if len(b.m) >= maxLocalBuckets {
				b.m = map[string]int64{}
			}
		}
		b.m[key] = tat
	}
	return d
}
