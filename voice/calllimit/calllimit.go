// Package calllimit caps the live calls of a tenant across every server
// instance, in Redis. A call holds a slot with an expiry it keeps renewing,
// so the slots of an instance that died free themselves within a minute.
//
// A slot belongs to a session and names its holder: the instance (its
// address) and the call that holds it. A session's call that moves to
// another instance (a client rejoining after its instance died or drained)
// takes the slot over, even when the tenant is at its cap, and the old
// holder can then neither renew nor release it. The holder is also how the
// browser path's requests find the instance that holds the call (Holder).
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

// acquire removes expired slots (and their holders), then takes the
// session's slot if it is held already (a call taking over) or there is
// room, atomically. KEYS: slots, holders. ARGV: now, expiry, max, session,
// holder, key ttl.
var acquire = redis.NewScript(`
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  redis.call('HDEL', KEYS[2], unpack(gone))
end
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1`)

// renew extends the slot while holder still holds it. ARGV: expiry,
// session, holder, key ttl.
var renew = redis.NewScript(`
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1`)

// releaseSlot frees the slot if holder still holds it. ARGV: session, holder.
var releaseSlot = redis.NewScript(`
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
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

func keys(tenant string) []string {
	return []string{"avb:calls:" + tenant, "avb:calls:" + tenant + ":holders"}
}

// redisTimeout bounds each renewal and release: the store may hang.
const redisTimeout = 2 * time.Second

// Acquire takes the slot of session in tenant for holder, renewed until
// release is called or another holder takes the slot over.
func (l *Limiter) Acquire(ctx context.Context, tenant, session, holder string) (release func(), err error) {
	lease := l.Lease
	now := time.Now()
	ok, err := acquire.Run(ctx, l.rdb, keys(tenant),
		now.UnixMilli(), now.Add(lease).UnixMilli(), l.max, session, holder, (2 * lease).Milliseconds()).Int()
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
				ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
				held, err := renew.Run(ctx, l.rdb, keys(tenant), time.Now().Add(lease).UnixMilli(), session, holder, (2 * lease).Milliseconds()).Int()
				cancel()
				if err == nil && held == 0 {
					return // taken over: the session's call lives elsewhere now
				}
			}
		}
	}()
	return func() {
		close(stop)
		ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
		defer cancel()
		_ = releaseSlot.Run(ctx, l.rdb, keys(tenant), session, holder).Err()
	}, nil
}

// Held reports whether a live server holds session's slot in tenant (it
// renews it; a dead server's slot expires within the lease).
func (l *Limiter) Held(ctx context.Context, tenant, session string) (bool, error) {
	h, err := l.Holder(ctx, tenant, session)
	return h != "", err
}

// Holder is who holds session's slot in tenant ("" when nobody does).
func (l *Limiter) Holder(ctx context.Context, tenant, session string) (string, error) {
	k := keys(tenant)
	pipe := l.rdb.Pipeline()
	score := pipe.ZScore(ctx, k[0], session)
	holder := pipe.HGet(ctx, k[1], session)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", err
	}
	if score.Err() != nil || holder.Err() != nil || int64(score.Val()) <= time.Now().UnixMilli() {
		return "", nil
	}
	return holder.Val(), nil
}
