// Package logging sets up the process logger (log/slog) and carries
// request-scoped fields (request id, tenant id, user id) in the context, so
// every line logged while serving a request names them.
package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// New returns a logger writing JSON (format "json") or text lines at level.
func New(w io.Writer, format, level string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: ParseLevel(level)}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(contextHandler{h})
}

// ParseLevel maps debug, info, warn and error to slog levels (info otherwise).
func ParseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Fields are the request-scoped values added to every log line. The request
// id is known when the request arrives; tenant and user are filled in later by
// authentication, which is why Fields is shared by pointer.
type Fields struct {
	mu        sync.Mutex
	requestID string
	tenantID  string
	userID    string
}

type fieldsKey struct{}

// WithFields returns ctx carrying a new Fields for requestID.
func WithFields(ctx context.Context, requestID string) (context.Context, *Fields) {
	f := &Fields{requestID: requestID}
	return context.WithValue(ctx, fieldsKey{}, f), f
}

// FieldsFrom returns the Fields in ctx, or nil.
func FieldsFrom(ctx context.Context) *Fields {
	f, _ := ctx.Value(fieldsKey{}).(*Fields)
	return f
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	if f := FieldsFrom(ctx); f != nil {
		return f.requestID
	}
	return ""
}

// SetTenant records the tenant the request acts for. Safe on a nil Fields.
func (f *Fields) SetTenant(id string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.tenantID = id
	f.mu.Unlock()
}

// SetUser records the user (or API key) making the request. Safe on a nil Fields.
func (f *Fields) SetUser(id string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.userID = id
	f.mu.Unlock()
}

func (f *Fields) attrs() []slog.Attr {
	f.mu.Lock()
	defer f.mu.Unlock()
	attrs := make([]slog.Attr, 0, 3)
	attrs = append(attrs, slog.String("request_id", f.requestID))
	if f.tenantID != "" {
		attrs = append(attrs, slog.String("tenant_id", f.tenantID))
	}
	if f.userID != "" {
		attrs = append(attrs, slog.String("user_id", f.userID))
	}
	return attrs
}

// contextHandler adds the request's Fields to each record.
type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if f := FieldsFrom(ctx); f != nil {
		r.AddAttrs(f.attrs()...)
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}
