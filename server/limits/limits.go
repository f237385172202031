// Package limits applies the request rate limits: it picks the caller's
// bucket and limit (API key, user, admin, or client IP when anonymous),
// asks the limiter, puts the X-RateLimit-* headers on every response, and
// refuses a request over its limit before anything runs behind it (no
// authorization check, no database transaction).
package limits

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/authz"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/platform/ratelimit"
	"github.com/agentvoicebox/avb/server/middleware"
)

// Response headers.
const (
	HeaderLimit      = "X-RateLimit-Limit"
	HeaderRemaining  = "X-RateLimit-Remaining"
	HeaderReset      = "X-RateLimit-Reset"
	HeaderRetryAfter = "Retry-After"
)

// Tiers are the limits, in requests per minute.
type Tiers struct {
	// Default limits users and anonymous callers (by client IP).
	Default int
	// APIKey limits a standard API key; an elevated key gets Elevated
	// times as much, an unlimited key none.
	APIKey   int
	Elevated int
	// Admin limits sysadmins and tenant admins.
	Admin int
	// Ceiling caps the keys of a tenant by the tenant's tier (0 or
	// absent: no ceiling).
	Ceiling map[string]int
}

// Tier labels (metrics; bounded).
const (
	TierAnonymous = "anonymous"
	TierUser      = "user"
	TierAdmin     = "admin"
	TierAPIKey    = "api_key"
)

// exempt are the RPCs that act on a live call: the stream that opened the
// call was counted, and the call's own limits (the live-call cap, the input
// buffer) bound them. SendAudio carries 50 frames a second.
var exempt = map[string]bool{
	"/avb.v1.VoiceService/SendAudio":   true,
	"/avb.v1.VoiceService/SendControl": true,
}

// For returns the bucket and limit of a caller (nil: anonymous, by ip).
func (t Tiers) For(p *authn.Principal, ip string) (bucket string, lim ratelimit.Limit, tier string) {
	switch {
	case p == nil:
		return "ip:" + ip, ratelimit.PerMinute(t.Default), TierAnonymous
	case p.APIKeyID != uuid.Nil && p.Kind != authn.KindUser:
		// API keys, and client tokens a key minted (they act as the key).
		rate := t.APIKey
		switch p.RateLimitTier {
		case "elevated":
			rate *= max(t.Elevated, 1)
		case "unlimited":
			rate = 0
		}
		if c := t.Ceiling[p.TenantTier]; c > 0 && (rate <= 0 || rate > c) {
			rate = c
		}
		return "key:" + p.APIKeyID.String(), ratelimit.PerMinute(rate), TierAPIKey
	}
	who := p.Subject
	if p.Kind == authn.KindClientToken || p.UserID != uuid.Nil {
		who = p.UserID.String()
	}
	if p.IsSysadmin() || slices.Contains(authz.IdPRoles(p.Roles), authz.RoleAdmin) {
		return "user:" + who, ratelimit.PerMinute(t.Admin), TierAdmin
	}
	return "user:" + who, ratelimit.PerMinute(t.Default), TierUser
}

// Option changes the interceptor.
type Option func(*interceptor)

// OnAdmit has f told of every request the limits let through (API key
// usage counts those, not the refused ones).
func OnAdmit(f func(ctx context.Context)) Option { return func(i *interceptor) { i.admit = f } }

// Interceptor is the Connect interceptor; it runs right after
// authentication.
func Interceptor(l *ratelimit.Limiter, t Tiers, m *metrics.Metrics, opts ...Option) connect.Interceptor {
	i := &interceptor{l: l, t: t, m: m}
	for _, o := range opts {
		o(i)
	}
	return i
}

type interceptor struct {
	l     *ratelimit.Limiter
	t     Tiers
	m     *metrics.Metrics
	admit func(ctx context.Context)
}

// decide takes one request from the caller's bucket; the decision is nil
// when nothing limits the request.
func (i *interceptor) decide(ctx context.Context, procedure string) (*ratelimit.Decision, error) {
	d, err := i.limit(ctx, procedure)
	if err == nil && i.admit != nil {
		i.admit(ctx)
	}
	return d, err
}

func (i *interceptor) limit(ctx context.Context, procedure string) (*ratelimit.Decision, error) {
	if exempt[procedure] {
		return nil, nil
	}
	bucket, lim, tier := i.t.For(authn.PrincipalFrom(ctx), middleware.ClientIP(ctx))
	if lim.Unlimited() {
		return nil, nil
	}
	d := i.l.Allow(ctx, bucket, lim)
	if d.Allowed {
		return &d, nil
	}
	if i.m != nil {
		i.m.RateLimitRejections.WithLabelValues(tier).Inc()
	}
	return &d, Refusal(d)
}

// Refusal is the error of a request over its limit: resource_exhausted
// (HTTP 429), reason rate_limited, RetryInfo with the delay, and the
// headers (Retry-After among them).
func Refusal(d ratelimit.Decision) *connect.Error {
	wait := retryAfterSeconds(d.RetryAfter)
	err := apierror.New(connect.CodeResourceExhausted, avbv1.ErrorReason_ERROR_REASON_RATE_LIMITED,
		fmt.Sprintf("rate limit exceeded: %d requests a minute; retry in %d s", d.Limit, wait),
		"limit", strconv.Itoa(d.Limit), "retry_after_seconds", strconv.Itoa(wait))
	if detail, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(d.RetryAfter)}); derr == nil {
		err.AddDetail(detail)
	}
	SetHeaders(err.Meta(), d)
	return err
}

// SetHeaders writes a decision's X-RateLimit-* headers (and Retry-After
// when refused) to h.
func SetHeaders(h http.Header, d ratelimit.Decision) {
	h.Set(HeaderLimit, strconv.Itoa(d.Limit))
	h.Set(HeaderRemaining, strconv.Itoa(d.Remaining))
	h.Set(HeaderReset, strconv.Itoa(ceilSeconds(d.ResetAfter)))
	if !d.Allowed {
		h.Set(HeaderRetryAfter, strconv.Itoa(retryAfterSeconds(d.RetryAfter)))
	}
}

func ceilSeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// retryAfterSeconds rounds up, and is at least one: a client told 0 would
// retry at once and be refused again.
func retryAfterSeconds(d time.Duration) int { return max(ceilSeconds(d), 1) }

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		d, err := i.decide(ctx, req.Spec().Procedure)
		if err != nil {
			return nil, err
		}
		res, err := next(ctx, req)
		if d != nil {
			if cerr := asConnect(err); cerr != nil {
				SetHeaders(cerr.Meta(), *d)
			} else if err == nil && res != nil {
				SetHeaders(res.Header(), *d)
			}
		}
		return res, err
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler counts a stream once, when it opens.
func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		d, err := i.decide(ctx, conn.Spec().Procedure)
		if err != nil {
			return err
		}
		if d != nil {
			SetHeaders(conn.ResponseHeader(), *d)
		}
		return next(ctx, conn)
	}
}

func asConnect(err error) *connect.Error {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr
	}
	return nil
}

// Failures limits failed authentication per client IP: each request that
// ends unauthenticated takes one from the IP's failure bucket (as many a
// minute as an anonymous caller may make). Once that bucket refuses, this
// instance refuses every request from the IP, before authentication runs,
// until the bucket has room again. A request that authenticates costs
// nothing here: no Redis round trip.
func Failures(l *ratelimit.Limiter, t Tiers, m *metrics.Metrics) connect.Interceptor {
	return &failures{l: l, lim: ratelimit.PerMinute(t.Default), m: m, blocked: map[string]time.Time{}}
}

type failures struct {
	l   *ratelimit.Limiter
	lim ratelimit.Limit
	m   *metrics.Metrics

	mu      sync.RWMutex
	blocked map[string]time.Time // client IP -> refused until
}

// maxBlocked bounds the IPs remembered; when full, expired ones go first.
const maxBlocked = 100_000

// check refuses an IP whose failures used up its bucket.
func (f *failures) check(ip string) error {
	// Every request passes here: a read lock, and expired entries are left
	// for failed() to prune when the map is full.
	f.mu.RLock()
	until, ok := f.blocked[ip]
	f.mu.RUnlock()
	if !ok || !time.Now().Before(until) {
		return nil
	}
	if f.m != nil {
		f.m.RateLimitRejections.WithLabelValues(TierAnonymous).Inc()
	}
	return Refusal(ratelimit.Decision{Limit: f.lim.Rate, RetryAfter: time.Until(until), ResetAfter: time.Until(until)})
}

// failed counts one failed authentication of ip.
func (f *failures) failed(ctx context.Context, ip string) {
	d := f.l.Allow(ctx, "authfail:"+ip, f.lim)
	if d.Allowed {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.blocked) >= maxBlocked {
		now := time.Now()
		for k, until := range f.blocked {
			if !now.Before(until) {
				delete(f.blocked, k)
			}
		}
		if len(f.blocked) >= maxBlocked {
			f.blocked = map[string]time.Time{}
		}
	}
	f.blocked[ip] = time.Now().Add(d.RetryAfter)
}

func (f *failures) around(ctx context.Context, run func() error) error {
	if f.lim.Unlimited() {
		return run()
	}
	ip := middleware.ClientIP(ctx)
	if err := f.check(ip); err != nil {
		return err
	}
	err := run()
	if connect.CodeOf(err) == connect.CodeUnauthenticated {
		f.failed(ctx, ip)
	}
	return err
}

func (f *failures) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		var res connect.AnyResponse
		err := f.around(ctx, func() error {
			var err error
			res, err = next(ctx, req)
			return err
		})
		return res, err
	}
}

func (f *failures) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (f *failures) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return f.around(ctx, func() error { return next(ctx, conn) })
	}
}
