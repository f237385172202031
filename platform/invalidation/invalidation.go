// Package invalidation tells every server instance to drop cached entries,
// through Redis pub/sub. A revoked API key or a suspended tenant is published
// once and every instance forgets it within milliseconds.
//
// Pub/sub delivers at most once: while the subscription is down, messages are
// lost. So the bus reports Healthy() == false until it is subscribed again,
// and on every (re)subscription it tells each handler to drop everything.
// Caches consult Healthy and go to the database while it is false.
package invalidation

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Channel is the Redis pub/sub channel the bus uses.
const Channel = "avb:invalidate"

// All is the key handlers receive when they must drop every entry.
const All = "*"

// Bus publishes and receives invalidations.
type Bus struct {
	rdb      *redis.Client
	log      *slog.Logger
	healthy  atomic.Bool
	mu       sync.RWMutex
	handlers map[string][]func(key string)
}

// New returns a bus on rdb. Call Run to receive.
func New(rdb *redis.Client, log *slog.Logger) *Bus {
	return &Bus{rdb: rdb, log: log, handlers: map[string][]func(string){}}
}

// Handle registers fn for a topic ("apikey", "tenant", "user"). fn receives
// the published key, or All.
func (b *Bus) Handle(topic string, fn func(key string)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handlers[topic] = append(b.handlers[topic], fn)
}

// Healthy reports whether invalidations are being received.
func (b *Bus) Healthy() bool { return b.healthy.Load() }

// Publish tells every instance (this one included) to drop topic/key. The
// local handlers run first, so this instance never serves the stale entry.
func (b *Bus) Publish(ctx context.Context, topic, key string) error {
	b.dispatch(topic, key)
	return b.rdb.Publish(ctx, Channel, topic+":"+key).Err()
}

// Run receives invalidations until ctx is done, resubscribing after errors.
func (b *Bus) Run(ctx context.Context) {
	for ctx.Err() == nil {
		b.receive(ctx)
		b.healthy.Store(false)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// quietCheck is how long a quiet subscription waits before it proves the
// connection alive with a ping; a ping unanswered for as long again means
// Redis is gone (a hung Redis never closes the connection).
const quietCheck = 2 * time.Second

func (b *Bus) receive(ctx context.Context) {
	ps := b.rdb.Subscribe(ctx, Channel)
	defer ps.Close()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, quietCheck)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isTimeout(err) && !pinged {
				// Quiet channel: prove the connection is alive.
				if perr := ps.Ping(ctx); perr != nil {
					b.markDown(perr)
					return
				}
				pinged = true
				continue
			}
			b.markDown(err)
			return
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: anything may have been missed before now.
			b.dispatchAll()
			if !b.healthy.Swap(true) {
				b.log.Info("invalidation bus subscribed")
			}
		case *redis.Message:
			topic, key, ok := strings.Cut(m.Payload, ":")
			if ok {
				b.dispatch(topic, key)
			}
		}
	}
}

func (b *Bus) markDown(err error) {
	if b.healthy.Swap(false) {
		b.log.Warn("invalidation bus down; caches bypassed until it is back", "error", err.Error())
	}
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}

func (b *Bus) dispatch(topic, key string) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, fn := range b.handlers[topic] {
		fn(key)
	}
}

func (b *Bus) dispatchAll() {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, fns := range b.handlers {
		for _, fn := range fns {
			fn(All)
		}
	}
}
