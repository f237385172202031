package dependency

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisHook puts every command and pipeline of a go-redis client under the
// guard, each bounded by timeout. Pub/sub receives are not commands; the
// subscriber bounds those itself.
func (g *Guard) RedisHook(timeout time.Duration) redis.Hook {
	return redisHook{g: g, timeout: timeout}
}

type redisHook struct {
	g       *Guard
	timeout time.Duration
}

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := h.g.Do(ctx, h.timeout, func(ctx context.Context) error { return next(ctx, cmd) })
		if errors.Is(err, ErrUnavailable) {
			cmd.SetErr(err)
		}
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := h.g.Do(ctx, h.timeout, func(ctx context.Context) error { return next(ctx, cmds) })
		if errors.Is(err, ErrUnavailable) {
			for _, c := range cmds {
				c.SetErr(err)
			}
		}
		return err
	}
}

// IsRedisFailure reports go-redis errors that mean Redis is unreachable or
// overloaded (its pool timed out, it is loading, it refused).
func IsRedisFailure(err error) bool {
	return errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) ||
		redis.HasErrorPrefix(err, "LOADING") || redis.HasErrorPrefix(err, "BUSY") || redis.HasErrorPrefix(err, "MASTERDOWN")
}
