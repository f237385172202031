package cache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/tenancy"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// db is the source of truth the caches load from: committed values by
// tenant, kind and id.
type db struct {
	mu sync.Mutex
	m  map[string]string
}

func (d *db) get(ctx context.Context, kind, id string) string {
	t, _ := tenancy.ID(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[t.String()+"|"+kind+"|"+id]
}

func (d *db) put(ctx context.Context, kind, id, v string) {
	t, _ := tenancy.ID(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[t.String()+"|"+kind+"|"+id] = v
}

// Property 13: two tenants (fresh ids each run) write and read the same kinds
// and ids through two instances, in random interleavings, including writes
// that land while a read is loading. A read never returns another tenant's
// value, and a read that starts after a write finished (on any instance)
// never returns a value older than that write.
func TestTenantIsolationAndFreshness(t *testing.T) {
	rdbA, rdbB := testenv.RedisClient(t), testenv.RedisClient(t)
	rapid.Check(t, func(rt *rapid.T) {
		tenants := []uuid.UUID{uuid.New(), uuid.New()}
		instances := []*Cache{New(rdbA, time.Minute, quiet), New(rdbB, time.Minute, quiet)}
		truth := &db{m: map[string]string{}}
		seq := 0
		write := func(ctx context.Context, c *Cache, kind, id string) string {
			seq++
			t, _ := tenancy.ID(ctx)
			v := fmt.Sprintf("%s|%s|%s|%d", t, kind, id, seq)
			truth.put(ctx, kind, id, v) // the commit
			if err := c.Delete(ctx, kind, id); err != nil {
				rt.Fatal(err)
			}
			return v
		}
		for i := range rapid.IntRange(1, 40).Draw(rt, "steps") {
			ten := tenants[rapid.IntRange(0, 1).Draw(rt, "tenant")]
			ctx := tenancy.With(context.Background(), ten)
			c := instances[rapid.IntRange(0, 1).Draw(rt, "instance")]
			other := instances[rapid.IntRange(0, 1).Draw(rt, "writer")]
			kind := rapid.SampledFrom([]string{"persona", "project"}).Draw(rt, "kind")
			id := rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "id")
			switch rapid.IntRange(0, 2).Draw(rt, "op") {
			case 0:
				write(ctx, c, kind, id)
			case 1, 2:
				racing := rapid.Bool().Draw(rt, "write while loading")
				before := truth.get(ctx, kind, id)
				var during string
				got, err := c.Fetch(ctx, kind, id, func(ctx context.Context) ([]byte, error) {
					v := truth.get(ctx, kind, id)
					if racing {
						during = write(ctx, other, kind, id)
					}
					return []byte(v), nil
				})
				if err != nil {
					rt.Fatal(err)
				}
				if s := string(got); s != "" && !strings.HasPrefix(s, ten.String()+"|") {
					rt.Fatalf("step %d: tenant %s read %q", i, ten, s)
				}
				if string(got) != before && (!racing || string(got) != during) {
					rt.Fatalf("step %d: read %q, the last finished write was %q", i, got, before)
				}
			}
		}
		// Every instance now serves every key's last write.
		for _, ten := range tenants {
			ctx := tenancy.With(context.Background(), ten)
			for _, c := range instances {
				for _, kind := range []string{"persona", "project"} {
					for _, id := range []string{"a", "b"} {
						got, err := c.Fetch(ctx, kind, id, func(ctx context.Context) ([]byte, error) {
							return []byte(truth.get(ctx, kind, id)), nil
						})
						if err != nil || string(got) != truth.get(ctx, kind, id) {
							rt.Fatalf("%s %s/%s: %q, want %q (%v)", ten, kind, id, got, truth.get(ctx, kind, id), err)
						}
					}
				}
			}
		}
	})
}

// Without a tenant in the context there is no key: nothing is read or
// written.
func TestNoTenantNoEntry(t *testing.T) {
	c := New(testenv.RedisClient(t), time.Minute, quiet)
	if _, err := c.Fetch(context.Background(), "persona", "a", func(context.Context) ([]byte, error) { return []byte("x"), nil }); err != ErrNoTenant {
		t.Fatalf("fetch without a tenant: %v", err)
	}
}

// A stampede on one key costs one load.
func TestStampedeLoadsOnce(t *testing.T) {
	c := New(testenv.RedisClient(t), time.Minute, quiet)
	ctx := tenancy.With(context.Background(), uuid.New())
	var loads atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			b, err := c.Fetch(ctx, "tenant", "x", func(context.Context) ([]byte, error) {
				loads.Add(1)
				<-release
				return []byte("v"), nil
			})
			if err != nil || string(b) != "v" {
				t.Errorf("fetch: %q %v", b, err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads for one key", n)
	}
}

// With Redis gone a read loads the value; nothing fails.
func TestRedisDownLoads(t *testing.T) {
	srv := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	c := New(rdb, time.Minute, quiet)
	ctx := tenancy.With(context.Background(), uuid.New())
	srv.Stop()
	b, err := c.Fetch(ctx, "tenant", "x", func(context.Context) ([]byte, error) { return []byte("v"), nil })
	if err != nil || string(b) != "v" {
		t.Fatalf("fetch with Redis down: %q %v", b, err)
	}
	if err := c.Delete(ctx, "tenant", "x"); err != nil {
		t.Fatalf("delete with Redis down: %v", err)
	}
}

// With Redis refusing or hung (connections open, nothing answers), a read
// still answers, from the loader, within the client's deadlines; a write's
// invalidation does not hold its request either.
func TestRedisFaultsBounded(t *testing.T) {
	opts, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	link := testenv.FaultyLink(t, "cache-redis", opts.Addr)
	const deadline = 200 * time.Millisecond
	rdb := redis.NewClient(&redis.Options{Addr: link.Addr(), MaxRetries: -1, DialTimeout: deadline,
		ReadTimeout: deadline, WriteTimeout: deadline, PoolTimeout: deadline, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	c := New(rdb, time.Minute, quiet)
	ctx := tenancy.With(context.Background(), uuid.New())
	for _, fault := range []testenv.Fault{testenv.Refused, testenv.Blackhole} {
		link.Inject(fault, 0)
		start := time.Now()
		b, err := c.Fetch(ctx, "tenant", "x", func(context.Context) ([]byte, error) { return []byte("v"), nil })
		if err != nil || string(b) != "v" {
			t.Fatalf("%s: fetch %q %v", fault, b, err)
		}
		if err := c.Delete(ctx, "tenant", "x"); err != nil {
			t.Fatalf("%s: delete %v", fault, err)
		}
		// A fetch is at most two Redis calls, a delete one.
		if took := time.Since(start); took > 3*deadline+time.Second {
			t.Fatalf("%s: a fetch and a delete took %v", fault, took)
		}
		link.Heal()
	}
}
