package middleware

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	connectcors "connectrpc.com/cors"

	"github.com/agentvoicebox/avb/platform/logging"
	"github.com/agentvoicebox/avb/platform/metrics"
)

// HTTPOptions configures the HTTP middleware.
type HTTPOptions struct {
	Metrics *metrics.Metrics
	// Route maps a request path to a bounded metrics label.
	Route func(path string) string
	// AllowedOrigins lists the browser origins CORS admits.
	AllowedOrigins []string
	// TrustForwardedFor takes the client IP from X-Forwarded-For.
	TrustForwardedFor bool
	// TLS adds Strict-Transport-Security.
	TLS bool
}

type clientIPKey struct{}

type hostKey struct{}

// Host returns the Host (HTTP/1.1) or :authority (HTTP/2) the request was sent to.
func Host(ctx context.Context) string {
	h, _ := ctx.Value(hostKey{}).(string)
	return h
}

// ClientIP returns the client address recorded for the request in ctx.
func ClientIP(ctx context.Context) string {
	ip, _ := ctx.Value(clientIPKey{}).(string)
	return ip
}

// HTTP wraps next with, outermost first: request id and log fields, client IP,
// security headers, CORS, and HTTP metrics.
func HTTP(next http.Handler, opts HTTPOptions) http.Handler {
	origins := make(map[string]bool, len(opts.AllowedOrigins))
	for _, o := range opts.AllowedOrigins {
		origins[o] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !SaneRequestID(id) {
			id = NewRequestID()
		}
		h := w.Header()
		h.Set(RequestIDHeader, id)
		securityHeaders(h, opts.TLS)

		ctx, _ := logging.WithFields(r.Context(), id)
		ctx = context.WithValue(ctx, clientIPKey{}, clientIP(r, opts.TrustForwardedFor))
		ctx = context.WithValue(ctx, hostKey{}, r.Host)
		r = r.WithContext(ctx)

		if origin := r.Header.Get("Origin"); origin != "" {
			if !origins[origin] {
				if isPreflight(r) {
					w.WriteHeader(http.StatusForbidden)
					return
				}
			} else if corsHeaders(h, r, origin) {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}

		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if opts.Metrics != nil {
			route := opts.Route(r.URL.Path)
			opts.Metrics.HTTPRequests.WithLabelValues(r.Method, route, strconv.Itoa(rec.status)).Inc()
			opts.Metrics.HTTPRequestDuration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
		}
	})
}

func securityHeaders(h http.Header, tls bool) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "strict-origin-when-cross-origin")
	h.Set("Permissions-Policy", "camera=(), geolocation=(), payment=(), microphone=(self)")
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'self'")
	if tls {
		h.Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
	}
}

func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}

// Headers a browser client may send and read, beyond Connect's own.
var (
	corsRequestHeaders  = []string{"Authorization", "X-API-Key", "X-Tenant-ID", RequestIDHeader}
	corsResponseHeaders = []string{RequestIDHeader, "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"}
	corsAllowMethods    = strings.Join(connectcors.AllowedMethods(), ", ")
	corsAllowHeaders    = strings.Join(append(connectcors.AllowedHeaders(), corsRequestHeaders...), ", ")
	corsExposeHeaders   = strings.Join(append(connectcors.ExposedHeaders(), corsResponseHeaders...), ", ")
)

// corsHeaders sets the CORS headers for an allowed origin and reports whether
// the request was a preflight that is now fully answered.
func corsHeaders(h http.Header, r *http.Request, origin string) bool {
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
	if !isPreflight(r) {
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		return false
	}
	h.Set("Access-Control-Allow-Methods", corsAllowMethods)
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", "7200")
	return true
}

func clientIP(r *http.Request, trustForwarded bool) string {
	if trustForwarded {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// statusRecorder remembers the status code. It forwards Flush, which
// streaming responses need, and Unwrap for http.ResponseController.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
