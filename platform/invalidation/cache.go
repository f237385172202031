package invalidation

import (
	"sync"
	"time"
)

// maxEntries bounds a cache; when full it starts over (entries are cheap to
// reload, memory is not free).
const maxEntries = 100_000

// Cache is an in-process TTL cache whose entries every instance drops when
// one of them publishes an invalidation for the entry's key. While the bus
// is unhealthy it misses every time, so nothing stale is served.
type Cache[V any] struct {
	bus *Bus
	ttl time.Duration
	mu  sync.RWMutex
	m   map[string]entry[V]
	gen uint64 // bumped by every invalidation
	// Observe, when set, counts each Fetch as a hit or a miss.
	Observe func(hit bool)
}

type entry[V any] struct {
	v  V
	at time.Time
}

// NewCache returns a cache for topic on bus. ttl 0 disables caching.
func NewCache[V any](bus *Bus, topic string, ttl time.Duration) *Cache[V] {
	c := &Cache[V]{bus: bus, ttl: ttl, m: map[string]entry[V]{}}
	bus.Handle(topic, func(key string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.gen++
		if key == All {
			c.m = map[string]entry[V]{}
			return
		}
		delete(c.m, key)
	})
	return c
}

// Get returns a fresh entry.
func (c *Cache[V]) Get(key string) (V, bool) {
	var zero V
	if c.ttl <= 0 || !c.bus.Healthy() {
		return zero, false
	}
	c.mu.RLock()
	e, ok := c.m[key]
	c.mu.RUnlock()
	if !ok || time.Since(e.at) > c.ttl {
		return zero, false
	}
	return e.v, true
}

// Fetch returns the cached value of key, or loads and caches it. A value
// loaded while an invalidation arrived is returned but not cached, so a
// load that raced a revoke cannot put the stale row back.
func (c *Cache[V]) Fetch(key string, load func() (V, error)) (V, error) {
	if v, ok := c.Get(key); ok {
		c.observe(true)
		return v, nil
	}
	c.observe(false)
	c.mu.RLock()
	gen := c.gen
	c.mu.RUnlock()
	v, err := load()
	if err != nil {
		return v, err
	}
	c.set(key, v, gen)
	return v, nil
}

func (c *Cache[V]) set(key string, v V, gen uint64) {
	if c.ttl <= 0 || !c.bus.Healthy() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.m) >= maxEntries {
		c.m = map[string]entry[V]{}
	}
	c.m[key] = entry[V]{v: v, at: time.Now()}
}

// Forget drops key on this instance only (the entry changed here, and no
// other instance can hold a newer one than the database).
func (c *Cache[V]) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, key)
}

func (c *Cache[V]) observe(hit bool) {
	if c.Observe != nil {
		c.Observe(hit)
	}
}
