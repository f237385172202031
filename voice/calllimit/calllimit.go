// Package calllimit caps the live calls of a tenant across every server
// instance, in Redis. A call holds a slot with an expiry it keeps renewing,
// so the slots of an instance that died free themselves within a minute.
package calllimit

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLimit: the tenant holds as many calls as it may.
var ErrLimit = errors.New("too many live calls for this tenant")

// DefaultLease is how long a slot lives without renewal, unless the
// limiter says otherwise.
const DefaultLease = 60 * time.Second

// acquire removes expired slots, then takes one if there is room, atomically.
var acquire = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`)

// Limiter hands out call slots.
type Limiter struct {
	rdb *redis.Client
	max int
	// Lease is how long a slot lives without renewal; a call renews it
	// every third of it. It is also how soon a dead server's calls are
	// known to be gone (Held).
	Lease time.Duration
}

// New returns a limiter of max calls per tenant.
func New(rdb *redis.Client, max int) *Limiter {
	return &Limiter{rdb: rdb, max: max, Lease: DefaultLease}
}

func key(tenant string) string { return "avb:calls:" + tenant }

// Acquire takes a slot for call in tenant, renewed until release is called.
func (l *Limiter) Acquire(ctx context.Context, tenant, call string) (release func(), err error) {
	lease := l.Lease
	now := time.Now()
	ok, err := acquire.Run(ctx, l.rdb, []string{key(tenant)},
		now.UnixMilli(), now.Add(lease).UnixMilli(), l.max, call, (2 * lease).Milliseconds()).Int()
	if err != nil {
		return nil, err
	}
	if ok == 0 {
		return nil, ErrLimit
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(lease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				l.rdb.ZAdd(context.Background(), key(tenant), redis.Z{Score: float64(time.Now().Add(lease).UnixMilli()), Member: call})
			}
		}
	}()
	return func() {
		close(stop)
		l.rdb.ZRem(context.Background(), key(tenant), call)
	}, nil
}

// Held reports whether a live server holds call's slot in tenant (it renews
// it; a dead server's slot expires within the lease).
func (l *Limiter) Held(ctx context.Context, tenant, call string) (bool, error) {
	score, err := l.rdb.ZScore(ctx, key(tenant), call).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return int64(score) > time.Now().UnixMilli(), nil
}
