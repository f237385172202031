package invalidation_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/invalidation"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two buses on one Redis: an invalidation published on one drops the entry
// in the other's cache. While Redis is down the caches miss; when it is back
// they are emptied (messages may have been lost) and work again.
func TestInvalidationAcrossInstancesAndRedisOutage(t *testing.T) {
	proc := testenv.StartRedis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	newBus := func() (*invalidation.Bus, *invalidation.Cache[string]) {
		rdb := redis.NewClient(&redis.Options{Addr: proc.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { _ = rdb.Close() })
		b := invalidation.New(rdb, log)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go b.Run(ctx)
		return b, invalidation.NewCache[string](b, "thing", time.Minute)
	}
	a, _ := newBus()
	b, cache := newBus()
	eventually(t, "both buses subscribed", func() bool { return a.Healthy() && b.Healthy() })

	var loads atomic.Int32
	load := func() (string, error) { loads.Add(1); return "v", nil }
	for range 3 {
		if _, err := cache.Fetch("k", load); err != nil {
			t.Fatal(err)
		}
	}
	if loads.Load() != 1 {
		t.Fatalf("loaded %d times, want 1 (cached)", loads.Load())
	}
	if err := a.Publish(context.Background(), "thing", "k"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the other instance to drop the entry", func() bool { _, ok := cache.Get("k"); return !ok })

	_, _ = cache.Fetch("k", load)
	proc.Stop()
	eventually(t, "the bus to notice Redis is down", func() bool { return !b.Healthy() })
	if _, ok := cache.Get("k"); ok {
		t.Fatal("cache served an entry while invalidations could be lost")
	}
	proc.Start()
	eventually(t, "the bus to resubscribe", b.Healthy)
	if _, ok := cache.Get("k"); ok {
		t.Fatal("entries from before the outage survived the resubscription")
	}
}
