// Package egress is how avb calls URLs its tenants choose (tool webhooks):
// only public addresses are reached. A host is resolved, every address it
// resolves to is checked, and the connection goes to a checked address, so
// DNS rebinding between the check and the dial cannot get around it.
// Loopback, private, link-local (cloud metadata included), carrier-grade
// NAT, multicast and unspecified addresses are refused, unless a platform
// allowlist (for development) names them.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// ErrRefused is the error of a URL or address avb will not call.
var ErrRefused = errors.New("refused destination")

// refusedPrefixes are the ranges no tenant URL may reach, beyond what
// netip.Addr's own predicates (loopback, private, link-local, multicast,
// unspecified) already catch.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 (maps to IPv4 anywhere)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("fd00:ec2::/32"),   // AWS metadata over IPv6 (also in fc00::/7)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4 (embeds IPv4 anywhere)
	netip.MustParsePrefix("2001::/32"),       // Teredo (embeds IPv4 anywhere)
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated
}

// Guard decides which addresses may be called and dials only those.
type Guard struct {
	// Allow lists addresses that are otherwise refused (development: a
	// tool server on localhost). Empty in production.
	Allow []netip.Prefix
	// Resolve looks a host up (default: the system resolver).
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects to a checked address (default: a net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Refused reports whether a is an address no tenant URL may reach.
func (g *Guard) Refused(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range g.Allow {
		if p.Contains(a) {
			return false
		}
	}
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	for _, p := range refusedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// DialContext resolves addr's host, refuses it if any address it resolves
// to is refused, and otherwise connects to one of those addresses (never
// resolving again).
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		resolve := g.Resolve
		if resolve == nil {
			resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
				return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			}
		}
		if addrs, err = resolve(ctx, host); err != nil {
			return nil, err
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: %s resolves to no address", ErrRefused, host)
	}
	for _, a := range addrs {
		if g.Refused(a) {
			return nil, fmt.Errorf("%w: %s resolves to a non-public address", ErrRefused, host)
		}
	}
	dial := g.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	var last error
	for _, a := range addrs {
		c, err := dial(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

// CheckURL refuses a URL avb will not call: not absolute http(s), https
// required and missing, user information in it, or a host that is an IP
// literal in a refused range. (Names are checked when dialed.)
func (g *Guard) CheckURL(raw string, requireHTTPS bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL", ErrRefused)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("%w: the scheme must be https", ErrRefused)
	case requireHTTPS && u.Scheme != "https":
		return nil, fmt.Errorf("%w: the scheme must be https", ErrRefused)
	case u.Hostname() == "":
		return nil, fmt.Errorf("%w: no host", ErrRefused)
	case u.User != nil:
		return nil, fmt.Errorf("%w: credentials in the URL", ErrRefused)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && g.Refused(ip) {
		return nil, fmt.Errorf("%w: %s is not a public address", ErrRefused, ip)
	}
	return u, nil
}

// Client returns an HTTP client that dials only through g, follows at most
// three redirects (each dialed through g again, and https only when
// requireHTTPS), and gives each request timeout.
func (g *Guard) Client(timeout time.Duration, requireHTTPS bool) *http.Client {
	tr := &http.Transport{
		DialContext:           g.DialContext,
		Proxy:                 nil, // a proxy would dial for us, unchecked
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return fmt.Errorf("%w: too many redirects", ErrRefused)
			}
			_, err := g.CheckURL(req.URL.String(), requireHTTPS)
			return err
		}}
}
