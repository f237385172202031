package ratelimit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/internal/testenv"
)

// model is the limit as a leaky bucket: level is the work (microseconds)
// still in the bucket; it drains at one microsecond per microsecond, a
// request adds one interval, and the bucket holds rate intervals. It is the
// same policy as GCRA, written the other way round.
type model struct {
	level int64
	at    int64
}

func (m *model) allow(now int64, l Limit) Decision {
	interval := max(l.Period.Microseconds()/int64(l.Rate), 1)
	capacity := interval * int64(l.Rate)
	if now > m.at {
		m.level = max(0, m.level-(now-m.at))
		m.at = now
	}
	d := Decision{Limit: l.Rate}
	if m.level+interval > capacity {
		d.RetryAfter = time.Duration(m.level+interval-capacity) * time.Microsecond
		d.ResetAfter = time.Duration(m.level) * time.Microsecond
		return d
	}
	m.level += interval
	d.Allowed = true
	d.Remaining = int((capacity - m.level) / interval)
	d.ResetAfter = time.Duration(m.level) * time.Microsecond
	return d
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Property 14: random request sequences over random limits and clocks give
// exactly the model's answers (admitted or refused, remaining, retry and
// reset times), in Redis and in the in-process fallback alike.
func TestLimiterMatchesModel(t *testing.T) {
	rdb := testenv.RedisClient(t)
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		lim := Limit{Rate: rapid.IntRange(1, 400).Draw(rt, "rate"),
			Period: time.Duration(rapid.IntRange(1, 120_000).Draw(rt, "period_ms")) * time.Millisecond}
		start := time.UnixMicro(rapid.Int64Range(1e15, 2e15).Draw(rt, "start_us"))
		now := start
		redisL := New(rdb, fmt.Sprintf("test:rl:%d:%d:", time.Now().UnixNano(), run), quiet)
		redisL.Now = func() time.Time { return now }
		localL := New(nil, "", quiet)
		localL.Now = redisL.Now
		var m model
		for i := range rapid.IntRange(1, 60).Draw(rt, "requests") {
			now = now.Add(time.Duration(rapid.Int64Range(0, int64(lim.Period)/int64(lim.Rate)*3).Draw(rt, "gap")))
			want := m.allow(now.UnixMicro(), lim)
			got := redisL.Allow(context.Background(), "k", lim)
			if got.Local {
				rt.Fatalf("request %d: decided locally with Redis up", i)
			}
			if got != want {
				rt.Fatalf("request %d at +%v: Redis decided %+v, the model %+v", i, now.Sub(start), got, want)
			}
			local := localL.local.allow(now.UnixMicro(), "k", lim)
			if local != want {
				rt.Fatalf("request %d at +%v: the local buckets decided %+v, the model %+v", i, now.Sub(start), local, want)
			}
		}
	})
}

// A full bucket admits exactly its size at once, then one request per
// interval; the answer's numbers are what the headers carry.
func TestLimiterBurstThenSteady(t *testing.T) {
	rdb := testenv.RedisClient(t)
	now := time.Unix(1_800_000_000, 0)
	l := New(rdb, fmt.Sprintf("test:rl:%d:", time.Now().UnixNano()), quiet)
	l.Now = func() time.Time { return now }
	lim := PerMinute(60)
	for i := range 60 {
		d := l.Allow(context.Background(), "k", lim)
		if !d.Allowed || d.Remaining != 59-i {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := l.Allow(context.Background(), "k", lim)
	if d.Allowed || d.RetryAfter != time.Second || d.ResetAfter != time.Minute {
		t.Fatalf("61st request: %+v", d)
	}
	now = now.Add(time.Second)
	if d := l.Allow(context.Background(), "k", lim); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("a second later: %+v", d)
	}
	if d := l.Allow(context.Background(), "other", lim); !d.Allowed || d.Remaining != 59 {
		t.Fatalf("another key shares nothing: %+v", d)
	}
}

// With Redis gone the limiter decides locally with the same limits, never
// fails a request for it, says so, and goes back to Redis when it returns.
func TestLimiterFallsBackAndReturns(t *testing.T) {
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	l := New(rdb, "rl:", quiet)
	var changes []bool
	l.OnFallback = func(local bool) { changes = append(changes, local) }
	lim := PerMinute(5)
	if d := l.Allow(context.Background(), "k", lim); !d.Allowed || d.Local || d.Remaining != 4 {
		t.Fatalf("with Redis: %+v", d)
	}
	srv.Stop()
	for i := range 5 {
		d := l.Allow(context.Background(), "k", lim)
		if !d.Local || !d.Allowed || d.Remaining != 4-i {
			t.Fatalf("local request %d: %+v", i, d)
		}
	}
	if d := l.Allow(context.Background(), "k", lim); d.Allowed {
		t.Fatalf("the local bucket has the same size: %+v", d)
	}
	if !l.Local() {
		t.Fatal("Local() is false with Redis down")
	}
	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := l.Allow(context.Background(), "k", lim)
		if !d.Local {
			if !d.Allowed || d.Remaining != 4 { // the restarted Redis kept nothing
				t.Fatalf("back on Redis, the bucket there: %+v", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the limiter did not go back to Redis")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fmt.Sprint(changes) != "[true false]" {
		t.Fatalf("fallback changes %v", changes)
	}
}

// Model is the reference model, for the tests of the packages built on
// the limiter (export for tests only).
type Model = model

// Allow is the model's decision for a request at now.
func (m *model) Allow(now time.Time, l Limit) Decision { return m.allow(now.UnixMicro(), l) }

// A caller that gave up before Redis answered says nothing about Redis:
// the limiter stays on it.
func TestCanceledCallerKeepsRedis(t *testing.T) {
	l := New(testenv.RedisClient(t), fmt.Sprintf("test:rl:%d:", time.Now().UnixNano()), quiet)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d := l.Allow(ctx, "k", PerMinute(5)); !d.Allowed {
		t.Fatalf("a canceled caller: %+v", d)
	}
	if l.Local() {
		t.Fatal("a canceled caller switched the limiter to local buckets")
	}
}
