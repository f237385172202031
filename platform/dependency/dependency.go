// Package dependency bounds every call avb makes to another process. Each
// dependency (postgres, redis, spicedb, temporal, oidc, llm, stt, tts) has a
// Guard: calls through it carry a deadline (the smaller of the request's own
// and the one configured for that kind of call), and a circuit breaker
// remembers that the dependency is down, so that while it is, calls fail at
// once instead of each waiting out its deadline.
//
// A failed call comes back as *Error, which the API reports as
// unavailable/dependency_unavailable whether the dependency refused, timed
// out or was already known to be down.
package dependency

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrUnavailable is what every *Error matches with errors.Is.
var ErrUnavailable = errors.New("dependency unavailable")

// errCallerGone marks a call its caller abandoned: no verdict.
var errCallerGone = errors.New("caller gave up")

// errKnownDown is the cause of a call refused by an open breaker.
var errKnownDown error = &cause{msg: "known to be down; failing fast"}

// cause is the inside of an *Error. It matches ErrUnavailable too, so a
// library that unwraps the *Error once still hands back an error the API
// reports as unavailable.
type cause struct {
	msg string
	err error
}

func (c *cause) Error() string {
	switch {
	case c.err == nil:
		return c.msg
	case c.msg == "":
		return c.err.Error()
	}
	return c.msg + ": " + c.err.Error()
}

func (c *cause) Unwrap() error { return c.err }

func (c *cause) Is(target error) bool { return target == ErrUnavailable }

// Error is a call that failed because its dependency did not answer in time,
// refused, or is known to be down.
type Error struct {
	Dependency string
	Err        error
}

func (e *Error) Error() string { return e.Dependency + " unavailable: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes every *Error match ErrUnavailable.
func (e *Error) Is(target error) bool { return target == ErrUnavailable }

// Breaker settings shared by every guard.
type Breaker struct {
	// OpenFor is how long calls fail fast once the dependency is down,
	// before one probe call is let through.
	OpenFor time.Duration
	// Failures is how many failures in a row (refused, reset) open the
	// breaker. A timeout, or readiness finding the dependency down, opens
	// it at once.
	Failures int
}

// Set holds the guards of one process and their metrics.
type Set struct {
	breaker Breaker
	log     *slog.Logger
	state   *prometheus.GaugeVec
	fails   *prometheus.CounterVec
	fast    *prometheus.CounterVec

	mu     sync.Mutex
	guards map[string]*Guard
}

// NewSet returns an empty set whose metrics are registered on reg (nil: not
// registered).
func NewSet(b Breaker, log *slog.Logger, reg prometheus.Registerer) *Set {
	if b.OpenFor <= 0 {
		b.OpenFor = 5 * time.Second
	}
	if b.Failures <= 0 {
		b.Failures = 3
	}
	s := &Set{breaker: b, log: log, guards: map[string]*Guard{},
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dependency_breaker_state", Help: "Circuit breaker of each dependency: 0 closed (calls pass), 1 half-open (one probe call), 2 open (calls fail fast).",
		}, []string{"dependency"}),
		fails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dependency_failures_total", Help: "Calls to a dependency that failed, by kind: timeout or error.",
		}, []string{"dependency", "kind"}),
		fast: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dependency_rejected_total", Help: "Calls refused at once because the dependency's breaker was open.",
		}, []string{"dependency"}),
	}
	if reg != nil {
		reg.MustRegister(s.state, s.fails, s.fast)
	}
	return s
}

// Guard returns the guard of a dependency, creating it on first use.
func (s *Set) Guard(name string) *Guard {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.guards[name]; ok {
		return g
	}
	g := &Guard{name: name, set: s}
	g.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     s.breaker.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return g.tripNow.Swap(false) || int(c.ConsecutiveFailures) >= s.breaker.Failures
		},
		IsExcluded:    func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(_ string, from, to gobreaker.State) { g.changed(from, to) },
	})
	s.state.WithLabelValues(name).Set(0)
	s.guards[name] = g
	return g
}

// Guards returns every guard, for readiness reports.
func (s *Set) Guards() map[string]*Guard {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*Guard, len(s.guards))
	for k, v := range s.guards {
		out[k] = v
	}
	return out
}

// Guard protects the calls to one dependency.
type Guard struct {
	name    string
	set     *Set
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	tripNow atomic.Bool
	// IsFailure, when set, decides which errors are the dependency's fault
	// in addition to the common ones (timeouts, refused and reset
	// connections, gRPC unavailable). Errors it rejects are the caller's
	// (not found, invalid input) and leave the breaker alone.
	IsFailure func(error) bool
}

// Name is the dependency's name.
func (g *Guard) Name() string { return g.name }

// State is "closed", "half-open" or "open".
func (g *Guard) State() string { return g.cb.State().String() }

// Open reports whether calls currently fail fast.
func (g *Guard) Open() bool { return g.cb.State() == gobreaker.StateOpen }

func (g *Guard) changed(from, to gobreaker.State) {
	g.set.state.WithLabelValues(g.name).Set(float64(to))
	if g.set.log == nil {
		return
	}
	switch {
	case to == gobreaker.StateOpen && from == gobreaker.StateClosed:
		g.set.log.Warn("dependency down; calls fail fast", "dependency", g.name, "open_for", g.set.breaker.OpenFor.String())
	case to == gobreaker.StateClosed:
		g.set.log.Info("dependency recovered", "dependency", g.name)
	}
}

// Down records that the dependency was found down outside a call (readiness):
// the breaker opens at once.
func (g *Guard) Down() {
	done, err := g.cb.Allow()
	if err != nil {
		return // already open, or its one probe is in flight
	}
	g.tripNow.Store(true)
	done(errKnownDown)
}

// Do runs fn with a context whose deadline is the earlier of ctx's and
// timeout (timeout <= 0: ctx's only), through the breaker. It returns fn's
// error, or *Error when the dependency failed or is known to be down.
func (g *Guard) Do(ctx context.Context, timeout time.Duration, fn func(context.Context) error) error {
	if ctx.Value(inside{}) == g {
		// A call the guarded call makes itself (a client initializing the
		// connection it dials, say): the outer call decides.
		return fn(ctx)
	}
	done, err := g.Begin()
	if err != nil {
		return err
	}
	cctx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		cctx, cancel = context.WithTimeout(ctx, timeout)
	}
	err = fn(context.WithValue(cctx, inside{}, g))
	cancel()
	return done(ctx, err)
}

// inside marks the context of a call through a guard.
type inside struct{}

// Begin admits one call, for calls that cannot be wrapped in a closure
// (streams). It fails at once with *Error while the breaker is open; the
// returned done must be called with the call's outcome and the caller's own
// context, and returns the error to pass on.
func (g *Guard) Begin() (func(ctx context.Context, err error) error, error) {
	done, err := g.cb.Allow()
	if err != nil {
		g.set.fast.WithLabelValues(g.name).Inc()
		return nil, &Error{Dependency: g.name, Err: errKnownDown}
	}
	var once atomic.Bool
	return func(ctx context.Context, err error) error {
		if !once.CompareAndSwap(false, true) {
			return err
		}
		switch {
		case err == nil:
			done(nil)
			return nil
		case errors.Is(err, errKnownDown):
			// Refused by an open breaker further in: no new verdict.
			done(errCallerGone)
			return err
		case ctx.Err() != nil:
			// The caller gave up (its deadline or cancel): no verdict on
			// the dependency.
			done(errCallerGone)
			return err
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			g.set.fails.WithLabelValues(g.name, "timeout").Inc()
			g.tripNow.Store(true)
			done(err)
			return &Error{Dependency: g.name, Err: &cause{msg: "no answer within its deadline", err: err}}
		case IsConnectionError(err) || errors.As(err, new(*StatusError)) || (g.IsFailure != nil && g.IsFailure(err)):
			g.set.fails.WithLabelValues(g.name, "error").Inc()
			done(err)
			return &Error{Dependency: g.name, Err: &cause{err: err}}
		default:
			done(nil) // the dependency answered; the answer was an error
			return err
		}
	}, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.DeadlineExceeded {
		return true
	}
	return false
}

// IsConnectionError reports errors that mean the dependency could not be
// reached or dropped the connection: refused, reset, closed mid-answer, or a
// gRPC unavailable.
func IsConnectionError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return true
	}
	return false
}
