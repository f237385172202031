package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// stubbed is a Guard whose resolver answers from a table and whose dialer
// fails the test if it is called for a refused address (and never opens a
// connection: it records the address and fails the dial).
func stubbed(t *testing.T, table map[string][]string) (*Guard, *[]string) {
	var dialed []string
	g := &Guard{
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			var out []netip.Addr
			for _, s := range table[host] {
				out = append(out, netip.MustParseAddr(s))
			}
			if out == nil {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			return out, nil
		},
	}
	g.Dial = func(_ context.Context, _, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if g.Refused(netip.MustParseAddr(host)) {
			t.Fatalf("dialed refused address %s", addr)
		}
		dialed = append(dialed, addr)
		return nil, errors.New("stub dialer: no traffic in tests")
	}
	return g, &dialed
}

// Names and literals that are or resolve to loopback, private, link-local,
// metadata, carrier-grade NAT, multicast or unspecified addresses are
// refused before any connection is attempted; a name that resolves to a
// public and a private address is refused whole (DNS rebinding); a public
// one is dialed at the address that was checked.
func TestRefusedBeforeAnyDial(t *testing.T) {
	g, dialed := stubbed(t, map[string][]string{
		"localhost.example":  {"127.0.0.1"},
		"metadata.example":   {"169.254.169.254"},
		"private.example":    {"10.1.2.3"},
		"cgnat.example":      {"100.64.0.9"},
		"v6local.example":    {"::1"},
		"ula.example":        {"fd00:ec2::254"},
		"mapped.example":     {"::ffff:127.0.0.1"},
		"rebinding.example":  {"93.184.216.34", "192.168.1.1"},
		"multicast.example":  {"224.0.0.1"},
		"zero.example":       {"0.0.0.0"},
		"nat64.example":      {"64:ff9b::a00:1"},
		"public.example":     {"93.184.216.34"},
		"public-v6.example":  {"2606:2800:220:1:248:1893:25c8:1946"},
		"broadcast.example":  {"255.255.255.255"},
		"linklocal6.example": {"fe80::1"},
	})
	client := g.Client(2*time.Second, true)
	for _, u := range []string{
		"https://localhost.example/hook", "https://metadata.example/latest/meta-data", "https://private.example/",
		"https://cgnat.example/", "https://v6local.example/", "https://ula.example/", "https://mapped.example/",
		"https://rebinding.example/", "https://multicast.example/", "https://zero.example/", "https://nat64.example/",
		"https://broadcast.example/", "https://linklocal6.example/",
		"https://127.0.0.1/", "https://[::1]/", "https://169.254.169.254/", "https://10.0.0.1:8443/", "https://[::ffff:10.0.0.1]/",
	} {
		_, err := client.Get(u)
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v, want refused", u, err)
		}
	}
	if len(*dialed) != 0 {
		t.Fatalf("dialed %v", *dialed)
	}
	for _, u := range []string{"https://public.example/hook", "https://public-v6.example/hook"} {
		if _, err := client.Get(u); err == nil || errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v, want the stub dialer's error", u, err)
		}
	}
	if strings.Join(*dialed, " ") != "93.184.216.34:443 [2606:2800:220:1:248:1893:25c8:1946]:443" {
		t.Fatalf("dialed %v, want the checked addresses", *dialed)
	}
}

// A redirect to a refused address is not followed, and the redirect is
// never dialed.
func TestRedirectToRefusedAddressIsNotFollowed(t *testing.T) {
	g, _ := stubbed(t, map[string][]string{})
	client := g.Client(time.Second, true)
	req, _ := http.NewRequest(http.MethodGet, "https://169.254.169.254/latest/meta-data", nil)
	if err := client.CheckRedirect(req, []*http.Request{{}}); !errors.Is(err, ErrRefused) {
		t.Fatalf("redirect to metadata: %v", err)
	}
	req, _ = http.NewRequest(http.MethodGet, "http://public.example/", nil)
	if err := client.CheckRedirect(req, []*http.Request{{}}); !errors.Is(err, ErrRefused) {
		t.Fatalf("redirect from https to http: %v", err)
	}
}

// The development allowlist lets a named range through.
func TestAllowlist(t *testing.T) {
	g := &Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	if g.Refused(netip.MustParseAddr("127.0.0.1")) || !g.Refused(netip.MustParseAddr("10.0.0.1")) {
		t.Fatal("allowlist not applied as given")
	}
}

// CheckURL accepts absolute https URLs to names or public literals only.
func TestCheckURL(t *testing.T) {
	g := &Guard{}
	for raw, ok := range map[string]bool{
		"https://tools.example.com/book":  true,
		"https://93.184.216.34/x":         true,
		"http://tools.example.com/book":   false, // https required
		"https://user:pw@tools.example/x": false,
		"ftp://tools.example.com/":        false,
		"https:///path":                   false,
		"https://[fe80::1%25eth0]/":       false,
		"https://192.168.0.1/":            false,
		"/relative":                       false,
	} {
		if _, err := g.CheckURL(raw, true); (err == nil) != ok {
			t.Errorf("%s: %v", raw, err)
		}
	}
}

// Whatever the input, CheckURL does not panic, and what it accepts is an
// absolute http(s) URL with a host and no credentials, whose literal
// address (if any) is public.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://tools.example.com/book", "https://127.0.0.1/", "https://[::1]:8443/x", "http://a@b/", "%", "https://0x7f.1/"} {
		f.Add(s)
	}
	g := &Guard{}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := g.CheckURL(raw, false)
		if err != nil {
			return
		}
		if (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User != nil {
			t.Fatalf("accepted %q", raw)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && g.Refused(ip) {
			t.Fatalf("accepted refused literal %q", raw)
		}
	})
}
