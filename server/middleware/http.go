package middleware

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
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
	// TrustedProxies are the reverse proxies whose X-Forwarded-For and
	// X-Forwarded-Proto are believed.
	TrustedProxies []netip.Prefix
	// RedirectHTTPS sends plain-HTTP requests to https (except the paths
	// in Plain).
	RedirectHTTPS bool
	// Plain are paths served over plain HTTP whatever RedirectHTTPS says
	// (health, readiness, metrics: probes and scrapers inside the cluster).
	Plain []string
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
		peer := peerAddr(r)
		trusted := isTrusted(peer, opts.TrustedProxies)
		https := r.TLS != nil || (trusted && forwardedHTTPS(r.Header))
		securityHeaders(h, https)
		if opts.RedirectHTTPS && !https && !slices.Contains(opts.Plain, r.URL.Path) {
			u := *r.URL
			u.Scheme, u.Host = "https", r.Host
			http.Redirect(w, r, u.String(), http.StatusPermanentRedirect)
			return
		}

		ctx, _ := logging.WithFields(r.Context(), id)
		ctx = context.WithValue(ctx, clientIPKey{}, clientIP(r.Header, peer, trusted, opts.TrustedProxies))
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
	corsResponseHeaders = []string{RequestIDHeader, "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"}
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

// peerAddr is the address of the connection's other end.
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		a, _ := netip.ParseAddr(r.RemoteAddr)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

func isTrusted(a netip.Addr, proxies []netip.Prefix) bool {
	for _, p := range proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedHTTPS reports whether the nearest proxy says the request came
// over https (the right-most X-Forwarded-Proto value).
func forwardedHTTPS(h http.Header) bool {
	values := h.Values("X-Forwarded-Proto")
	if len(values) == 0 {
		return false
	}
	last := values[len(values)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.EqualFold(strings.TrimSpace(last), "https")
}

// clientIP is the address the request came from. Only a trusted proxy's
// X-Forwarded-For is read, right to left: each trusted proxy appended the
// address it got the request from, so the first address that is not a
// trusted proxy is the client. Entries left of it are whatever the client
// sent, and are never believed: a client cannot pick its own IP.
func clientIP(h http.Header, peer netip.Addr, trusted bool, proxies []netip.Prefix) string {
	if !peer.IsValid() {
		return "unknown"
	}
	if !trusted {
		return peer.String()
	}
	hop := peer
	values := h.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(entries[j]))
			if err != nil {
				return hop.String() // not an address: what sent it is the client
			}
			hop = a.Unmap()
			if !isTrusted(hop, proxies) {
				return hop.String()
			}
		}
	}
	return hop.String()
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
