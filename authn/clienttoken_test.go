package authn_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/platform/secret"
)

// Client tokens verify exactly when untampered, signed with the same key and
// unexpired.
func TestPropertyClientTokens(t *testing.T) {
	t.Parallel()
	ct := authn.NewClientTokens(secret.New("0123456789abcdef0123456789abcdef"))
	other := authn.NewClientTokens(secret.New("fedcba9876543210fedcba9876543210"))
	rapid.Check(t, func(t *rapid.T) {
		key, sess := uuid.New(), uuid.New()
		exp := time.Now().Add(time.Duration(rapid.IntRange(-600, 600).Draw(t, "ttl s")) * time.Second)
		tok, err := ct.Mint(authn.ClientClaims{Tenant: uuid.New(), APIKey: &key, Session: &sess, Expiry: exp.Unix()})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := ct.Verify(tok)
		if time.Now().Unix() >= exp.Unix() {
			if err == nil {
				t.Fatal("expired token accepted")
			}
		} else if err != nil || *cl.APIKey != key || *cl.Session != sess {
			t.Fatalf("valid token: %v %+v", err, cl)
		}
		if _, err := other.Verify(tok); err == nil {
			t.Fatal("token verified with another key")
		}
		i := rapid.IntRange(len(authn.ClientTokenPrefix), len(tok)-1).Draw(t, "tamper at")
		c := byte('A')
		if tok[i] == 'A' {
			c = 'B'
		}
		if _, err := ct.Verify(tok[:i] + string(c) + tok[i+1:]); err == nil {
			t.Fatal("tampered token accepted")
		}
		if _, err := ct.Verify(strings.TrimPrefix(tok, authn.ClientTokenPrefix)); err == nil {
			t.Fatal("token without prefix accepted")
		}
	})
}
