// Package cache is the tenant-scoped cache in Redis. Every key is
// t:{tenant}:{kind}:{id}, and the tenant always comes from the request's
// context (tenancy), never from an argument, so no caller can read or fill
// another tenant's entries. Every entry has a TTL.
//
// A read never returns a value older than the last write that finished on
// any instance: writers delete the entry after their commit (Delete), and
// that bumps the entry's version, so a load that raced the write (it read
// the database before the commit) cannot put the old value back. Loads of
// one key are shared (singleflight): a stampede costs one load.
//
// Redis being down never fails a read: the value is loaded instead.
package cache

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/agentvoicebox/avb/tenancy"
)

// ErrNoTenant: the context carries no tenant, so there is no key.
var ErrNoTenant = errors.New("cache: no tenant in context")

// maxLoad is the longest a load may take and still fill the cache; entry
// versions outlive it (a slower load is served but not cached).
const maxLoad = 30 * time.Second

// Cache is the tenant-scoped cache.
type Cache struct {
	rdb redis.Cmdable
	ttl time.Duration
	log *slog.Logger
	sf  singleflight.Group
	// Observe, when set, counts each read as a hit or a miss, by kind.
	Observe func(kind string, hit bool)
}

// New returns a cache whose entries live for ttl (0: nothing is cached).
func New(rdb redis.Cmdable, ttl time.Duration, log *slog.Logger) *Cache {
	return &Cache{rdb: rdb, ttl: ttl, log: log}
}

// Key is the Redis key of kind/id for the tenant in ctx.
func Key(ctx context.Context, kind, id string) (string, error) {
	t, ok := tenancy.ID(ctx)
	if !ok {
		return "", ErrNoTenant
	}
	return "t:" + t.String() + ":" + kind + ":" + id, nil
}

func versionKey(key string) string { return key + ":v" }

// setIfVersion stores a loaded value unless the entry's version moved
// since the load began (a write finished in between).
var setIfVersion = redis.NewScript(`
local v = redis.call('GET', KEYS[2]) or '0'
if v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`)

// invalidate bumps the versions of entries and deletes them.
var invalidate = redis.NewScript(`
for i = 1, #KEYS do
  local v = KEYS[i] .. ':v'
  redis.call('INCR', v)
  redis.call('PEXPIRE', v, ARGV[1])
  redis.call('DEL', KEYS[i])
end
return #KEYS`)

// Get returns the cached value of kind/id.
func (c *Cache) Get(ctx context.Context, kind, id string) ([]byte, bool, error) {
	key, err := Key(ctx, kind, id)
	if err != nil {
		return nil, false, err
	}
	b, err := c.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		c.observe(kind, false)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	c.observe(kind, true)
	return b, true, nil
}

// Fetch returns the cached value of kind/id, or loads it, caches it and
// returns it. Concurrent fetches of one key share one load. A load error
// is returned and nothing is cached; Redis failing is not an error (the
// value is loaded).
func (c *Cache) Fetch(ctx context.Context, kind, id string, load func(context.Context) ([]byte, error)) ([]byte, error) {
	key, err := Key(ctx, kind, id)
	if err != nil {
		return nil, err
	}
	if c.ttl <= 0 {
		return load(ctx)
	}
	ch := c.sf.DoChan(key, func() (any, error) {
		// The load is shared: it must not end because the first caller
		// gave up, but it is bounded.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxLoad)
		defer cancel()
		return c.fetch(lctx, kind, key, load)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]byte), nil
	}
}

func (c *Cache) fetch(ctx context.Context, kind, key string, load func(context.Context) ([]byte, error)) ([]byte, error) {
	vals, err := c.rdb.MGet(ctx, key, versionKey(key)).Result()
	if err == nil && len(vals) == 2 {
		if s, ok := vals[0].(string); ok {
			c.observe(kind, true)
			return []byte(s), nil
		}
	}
	c.observe(kind, false)
	version := "0"
	if err == nil && len(vals) == 2 {
		if s, ok := vals[1].(string); ok {
			version = s
		}
	}
	start := time.Now()
	b, lerr := load(ctx)
	if lerr != nil {
		return nil, lerr
	}
	if err == nil && time.Since(start) < maxLoad/2 {
		if serr := setIfVersion.Run(ctx, c.rdb, []string{key, versionKey(key)}, version, b, c.ttl.Milliseconds()).Err(); serr != nil {
			c.log.Debug("cache fill failed", "kind", kind, "error", serr.Error())
		}
	}
	return b, nil
}

// Delete drops entries of kind for the tenant in ctx; every writer calls
// it after its commit. Should Redis not take it, it is retried in the
// background until it does or the entries would have expired anyway.
func (c *Cache) Delete(ctx context.Context, kind string, ids ...string) error {
	if len(ids) == 0 || c.ttl <= 0 {
		return nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		key, err := Key(ctx, kind, id)
		if err != nil {
			return err
		}
		keys[i] = key
	}
	keep := strconv.FormatInt((c.ttl + 2*maxLoad).Milliseconds(), 10)
	// The write has committed: its invalidation must not end with the
	// request that made it.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := invalidate.Run(ictx, c.rdb, keys, keep).Err()
	if err == nil {
		return nil
	}
	c.log.Warn("cache invalidation failed; retrying", "kind", kind, "error", err.Error())
	go c.retry(keys, keep, time.Now().Add(c.ttl))
	return nil
}

func (c *Cache) retry(keys []string, keep string, until time.Time) {
	for delay := 100 * time.Millisecond; time.Now().Before(until); delay = min(2*delay, 5*time.Second) {
		time.Sleep(delay)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := invalidate.Run(ctx, c.rdb, keys, keep).Err()
		cancel()
		if err == nil {
			return
		}
	}
}

func (c *Cache) observe(kind string, hit bool) {
	if c.Observe != nil {
		c.Observe(kind, hit)
	}
}
