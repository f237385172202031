package tts

import (
	"container/list"
	"context"
	"strings"
	"sync"
)

// Cache replays sentences already synthesized. Replies repeat (greetings,
// confirmations, "Could you say that again?"), and a replayed sentence
// costs no synthesis at all. Entries are keyed by voice and text, kept in
// least-recently-used order and bounded in bytes; one Cache serves every
// call of an instance. A replay is emitted in chunks of 100 ms, checking
// ctx between them, so a barge-in stops it as fast as a live synthesis.
type Cache struct {
	next     Synthesizer
	maxBytes int64
	// OnHit and OnMiss, when set, count lookups (metrics).
	OnHit, OnMiss func()

	mu    sync.Mutex
	order *list.List // front: most recently used
	items map[cacheKey]*list.Element
	bytes int64
}

type cacheKey struct{ voice, text string }

type cacheEntry struct {
	key     cacheKey
	samples []int16
}

// NewCache caches next's output, holding at most maxBytes of samples.
func NewCache(next Synthesizer, maxBytes int64) *Cache {
	return &Cache{next: next, maxBytes: maxBytes, order: list.New(), items: map[cacheKey]*list.Element{}}
}

// SampleRate implements Synthesizer.
func (c *Cache) SampleRate() int { return c.next.SampleRate() }

// Bytes is how much audio the cache holds.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Synthesize implements Synthesizer.
func (c *Cache) Synthesize(ctx context.Context, req Request, emit func([]int16) error) error {
	key := cacheKey{req.Voice, strings.Join(strings.Fields(req.Text), " ")}
	if samples, ok := c.get(key); ok {
		if c.OnHit != nil {
			c.OnHit()
		}
		chunk := max(c.SampleRate()/10, 1)
		for i := 0; i < len(samples); i += chunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			// A copy: emit may keep or change what it is given.
			if err := emit(append([]int16(nil), samples[i:min(i+chunk, len(samples))]...)); err != nil {
				return err
			}
		}
		return nil
	}
	if c.OnMiss != nil {
		c.OnMiss()
	}
	var all []int16
	err := c.next.Synthesize(ctx, req, func(s []int16) error {
		all = append(all, s...)
		return emit(s)
	})
	if err == nil {
		c.put(key, all)
	}
	return err
}

func (c *Cache) get(k cacheKey) ([]int16, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).samples, true
}

// put keeps samples under k, evicting the least recently used entries to
// stay within the bound. One sentence may take at most an eighth of it, so
// a long text never flushes the common ones.
func (c *Cache) put(k cacheKey, samples []int16) {
	size := int64(len(samples)) * 2
	if size == 0 || size > c.maxBytes/8 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.order.PushFront(&cacheEntry{key: k, samples: samples})
	c.bytes += size
	for c.bytes > c.maxBytes {
		last := c.order.Back()
		ent := last.Value.(*cacheEntry)
		c.order.Remove(last)
		delete(c.items, ent.key)
		c.bytes -= int64(len(ent.samples)) * 2
	}
}
