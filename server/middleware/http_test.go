package middleware

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

var proxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}

func addr(t *rapid.T, label string, trusted bool) netip.Addr {
	b := rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(t, label)
	if trusted {
		b[0] = 10
	} else if b[0] == 10 {
		b[0] = 11
	}
	return netip.AddrFrom4([4]byte(b))
}

// Whatever X-Forwarded-For a client sends, the client IP is the address the
// first trusted proxy got the request from: a client cannot pick its own.
// Without a trusted proxy in front, the header is not read at all.
func TestClientIPCannotBeSpoofed(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		client := addr(t, "client", false)
		hops := rapid.IntRange(0, 3).Draw(t, "proxies")
		// What the client put in the header itself: anything.
		spoofed := rapid.SliceOfN(rapid.StringMatching(`[0-9a-f.:, ]{0,20}`), 0, 3).Draw(t, "spoofed")
		xff := append([]string{}, spoofed...)
		peer := client
		for i := range hops {
			xff = append(xff, peer.String()) // each proxy appends who sent it the request
			peer = addr(t, fmt.Sprintf("proxy%d", i), true)
		}
		h := http.Header{}
		if len(xff) > 0 {
			h.Set("X-Forwarded-For", strings.Join(xff, ", "))
		}
		trusted := isTrusted(peer, proxies)
		if got := clientIP(h, peer, trusted, proxies); got != client.String() {
			t.Fatalf("client %s via %d proxies, header %q: got %s", client, hops, h.Get("X-Forwarded-For"), got)
		}
	})
}

func TestHTTPSFromTrustedProxyOnly(t *testing.T) {
	h := HTTP(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), HTTPOptions{
		Route: func(string) string { return "" }, TrustedProxies: proxies, RedirectHTTPS: true, Plain: []string{"/health/"}})
	for _, c := range []struct {
		remote, proto, path string
		status              int
		hsts                bool
	}{
		{"10.1.2.3:5000", "https", "/avb.v1.SystemService/GetServerInfo", 200, true},     // a trusted proxy terminated TLS
		{"203.0.113.9:5000", "https", "/avb.v1.SystemService/GetServerInfo", 308, false}, // anyone else's header means nothing
		{"10.1.2.3:5000", "http", "/avb.v1.SystemService/GetServerInfo", 308, false},
		{"203.0.113.9:5000", "", "/health/", 200, false}, // probes stay on plain HTTP
	} {
		req := httptest.NewRequest(http.MethodPost, "http://api.example.com"+c.path+"?q=1", nil)
		req.RemoteAddr = c.remote
		if c.proto != "" {
			req.Header.Set("X-Forwarded-Proto", c.proto)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.status || (rec.Header().Get("Strict-Transport-Security") != "") != c.hsts {
			t.Errorf("%+v: %d, HSTS %q", c, rec.Code, rec.Header().Get("Strict-Transport-Security"))
		}
		if c.status == 308 && rec.Header().Get("Location") != "https://api.example.com"+c.path+"?q=1" {
			t.Errorf("%+v: redirected to %q", c, rec.Header().Get("Location"))
		}
	}
}
