package authn_test

import (
	"testing"

	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/authn"
)

// Property 2 (resolution order): the tenant comes from the token's claim,
// else the X-Tenant-ID header, else the subdomain; absent everywhere, none.
func TestPropertyTenantRefPrecedence(t *testing.T) {
	t.Parallel()
	slug := rapid.StringMatching(`[a-z0-9][a-z0-9-]{0,20}[a-z0-9]`)
	rapid.Check(t, func(t *rapid.T) {
		claim := rapid.OneOf(rapid.Just(""), slug).Draw(t, "claim")
		header := rapid.OneOf(rapid.Just(""), slug).Draw(t, "header")
		sub := rapid.OneOf(rapid.Just(""), slug).Draw(t, "subdomain")
		host := "avb.test:8080"
		if sub != "" {
			host = sub + ".avb.test:8080"
		}
		ref, src := authn.TenantRef(claim, header, host, "avb.test")
		switch {
		case claim != "":
			if ref != claim || src != authn.SourceClaim {
				t.Fatalf("claim %q ignored: %q %v", claim, ref, src)
			}
		case header != "":
			if ref != header || src != authn.SourceHeader {
				t.Fatalf("header %q ignored: %q %v", header, ref, src)
			}
		case sub != "":
			if ref != sub || src != authn.SourceSubdomain {
				t.Fatalf("subdomain %q ignored: %q %v", sub, ref, src)
			}
		default:
			if ref != "" || src != authn.SourceNone {
				t.Fatalf("tenant invented: %q %v", ref, src)
			}
		}
	})
}

func TestSubdomain(t *testing.T) {
	t.Parallel()
	tests := []struct{ host, base, want string }{
		{"acme.avb.test", "avb.test", "acme"},
		{"ACME.avb.test:443", "avb.test", "acme"},
		{"avb.test", "avb.test", ""},
		{"a.b.avb.test", "avb.test", ""},
		{"acme.evil-avb.test", "avb.test", ""},
		{"acme.avb.test", "", ""},
		{"acme.localhost:8080", "localhost", "acme"},
	}
	for _, tt := range tests {
		if got := authn.Subdomain(tt.host, tt.base); got != tt.want {
			t.Errorf("Subdomain(%q, %q) = %q, want %q", tt.host, tt.base, got, tt.want)
		}
	}
}
