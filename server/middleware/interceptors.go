package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/platform/logging"
	"github.com/agentvoicebox/avb/platform/metrics"
)

// Observe logs one line per RPC (procedure, protocol, code, duration, client
// IP, request id) and counts it in rpc_requests_total. For streams it also
// tracks stream_connections and stream_messages_total. It is the outermost
// interceptor, so it sees the code the client sees.
func Observe(log *slog.Logger, m *metrics.Metrics) connect.Interceptor {
	return &observe{log: log, m: m}
}

type observe struct {
	log *slog.Logger
	m   *metrics.Metrics
}

func (o *observe) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		o.done(ctx, req.Spec(), req.Peer(), req.HTTPMethod(), start, err)
		return res, err
	}
}

func (o *observe) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o *observe) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		procedure := conn.Spec().Procedure
		open := o.m.StreamConnections.WithLabelValues(procedure)
		open.Inc()
		defer open.Dec()
		err := next(ctx, &countingConn{
			StreamingHandlerConn: conn,
			in:                   o.m.StreamMessages.WithLabelValues(procedure, "in"),
			out:                  o.m.StreamMessages.WithLabelValues(procedure, "out"),
		})
		o.done(ctx, conn.Spec(), conn.Peer(), "POST", start, err)
		return err
	}
}

func (o *observe) done(ctx context.Context, spec connect.Spec, peer connect.Peer, method string, start time.Time, err error) {
	code := "ok"
	level := slog.LevelInfo
	if err != nil {
		c := connect.CodeOf(err)
		code = c.String()
		if c == connect.CodeInternal || c == connect.CodeUnknown || c == connect.CodeDataLoss {
			level = slog.LevelError
		}
	}
	o.m.RPCRequests.WithLabelValues(spec.Procedure, code).Inc()
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("procedure", spec.Procedure),
		slog.String("protocol", peer.Protocol),
		slog.String("code", code),
		slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
		slog.String("client_ip", ClientIP(ctx)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
		if reason := apierror.Reason(err); reason != "" {
			attrs = append(attrs, slog.String("reason", reason))
		}
	}
	o.log.LogAttrs(ctx, level, "rpc", attrs...)
}

type countingConn struct {
	connect.StreamingHandlerConn
	in, out interface{ Inc() }
}

func (c *countingConn) Receive(msg any) error {
	err := c.StreamingHandlerConn.Receive(msg)
	if err == nil {
		c.in.Inc()
	}
	return err
}

func (c *countingConn) Send(msg any) error {
	err := c.StreamingHandlerConn.Send(msg)
	if err == nil {
		c.out.Inc()
	}
	return err
}

// Errors is the one place where handler errors become API errors. Connect
// errors pass through; anything else (a bug, a driver error) becomes internal
// with the request id and no internals, and its cause is logged. With
// exposeInternal (dev only) the cause is appended to the message.
func Errors(log *slog.Logger, exposeInternal bool) connect.Interceptor {
	e := &errorMapper{log: log, expose: exposeInternal}
	return e
}

type errorMapper struct {
	log    *slog.Logger
	expose bool
}

func (e *errorMapper) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		return res, e.mapErr(ctx, err)
	}
}

func (e *errorMapper) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (e *errorMapper) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return e.mapErr(ctx, next(ctx, conn))
	}
}

func (e *errorMapper) mapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	// Past the request's own deadline the answer is deadline_exceeded,
	// whatever the call that ran out of time reported.
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	}
	err = apierror.From(err)
	var cerr *connect.Error
	if errors.As(err, &cerr) && (apierror.Info(err) != nil || !isServerFault(cerr.Code())) {
		return err
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	}
	id := logging.RequestID(ctx)
	e.log.ErrorContext(ctx, "internal error", "error", err.Error())
	out := apierror.Internal(id)
	if e.expose {
		out = apierror.New(connect.CodeInternal, avbv1.ErrorReason_ERROR_REASON_INTERNAL,
			fmt.Sprintf("internal error (request id %s): %v", id, err), "request_id", id)
	}
	return out
}

// isServerFault reports codes whose messages may carry internals.
func isServerFault(c connect.Code) bool {
	return c == connect.CodeInternal || c == connect.CodeUnknown || c == connect.CodeDataLoss
}

// Recover turns a handler panic into an error for Errors to map; the
// panic value is logged with the request id.
func Recover(log *slog.Logger) connect.HandlerOption {
	return connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
		log.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", fmt.Sprint(p))
		return apierror.Internal(logging.RequestID(ctx))
	})
}

// Drain gives open streams a deadline during shutdown: when draining is
// done, each stream's context is canceled and the client is told
// unavailable/server_shutting_down, so it reconnects to another instance.
func Drain(draining context.Context) connect.Interceptor {
	return drain{draining}
}

type drain struct{ draining context.Context }

func (d drain) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (d drain) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (d drain) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var drained atomic.Bool
		stop := context.AfterFunc(d.draining, func() { drained.Store(true); cancel() })
		defer stop()
		err := next(ctx, conn)
		if drained.Load() {
			return apierror.New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_SERVER_SHUTTING_DOWN,
				"server is shutting down; reconnect")
		}
		return err
	}
}
