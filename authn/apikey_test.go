package authn_test

import (
	"context"
	"crypto/sha256"
	"regexp"
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/store"
)

var keyShape = regexp.MustCompile(`^avb_[A-Za-z0-9_-]{43}$`)

// Property 6: every generated key has the documented shape, is recognized,
// is unique, and is stored only as its SHA-256 with a short display prefix.
func TestPropertyKeyFormatAndHash(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	rapid.Check(t, func(t *rapid.T) {
		secret, prefix, hash := authn.NewAPIKey()
		if !keyShape.MatchString(secret) || !authn.LooksLikeAPIKey(secret) {
			t.Fatalf("bad key %q", secret)
		}
		if seen[secret] {
			t.Fatalf("key repeated: %q", secret)
		}
		seen[secret] = true
		want := sha256.Sum256([]byte(secret))
		if string(hash) != string(want[:]) || string(authn.HashAPIKey(secret)) != string(hash) {
			t.Fatal("hash is not SHA-256 of the key")
		}
		if len(prefix) != 12 || secret[:12] != prefix {
			t.Fatalf("prefix %q does not start the key", prefix)
		}
		other := rapid.String().Draw(t, "other")
		if authn.LooksLikeAPIKey(other) != keyShape.MatchString(other) {
			t.Fatalf("LooksLikeAPIKey(%q) disagrees with the format", other)
		}
	})
}

// fakeKeys is a KeyStore in memory, for the verification logic alone (the
// real store is exercised by the integration tests).
type fakeKeys struct{ keys map[string]*store.APIKeyAuth }

func (f fakeKeys) ByHash(_ context.Context, h []byte) (*store.APIKeyAuth, error) {
	if k, ok := f.keys[string(h)]; ok {
		return k, nil
	}
	return nil, store.ErrNotFound
}

func (f fakeKeys) RecordUsage(context.Context, []store.Usage) error { return nil }

// Property 7: a key verifies exactly while now < expires_at and it is not
// revoked; the boundary instant itself is expired. Rotation's grace window is
// an expiry, so this covers its boundaries too.
func TestPropertyExpiryAndRevocationBoundaries(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		secret, _, hash := authn.NewAPIKey()
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		k := &store.APIKeyAuth{ID: uuid.New(), TenantID: uuid.New(), Scopes: []string{"admin"}}
		var expires *time.Time
		if rapid.Bool().Draw(t, "expires") {
			e := base.Add(time.Duration(rapid.Int64Range(-1e9, 1e9).Draw(t, "expiry offset ns")))
			expires = &e
			k.ExpiresAt = expires
		}
		revoked := rapid.Bool().Draw(t, "revoked")
		if revoked {
			r := base.Add(-time.Hour)
			k.RevokedAt = &r
		}
		v := authn.NewAPIKeysWithClock(fakeKeys{map[string]*store.APIKeyAuth{string(hash): k}},
			invalidation.New(nil, nil), 0, func() time.Time { return base })
		_, err := v.Verify(context.Background(), secret)
		switch {
		case revoked:
			if err != authn.ErrAPIKeyRevoked {
				t.Fatalf("revoked key: %v", err)
			}
		case expires != nil && !base.Before(*expires):
			if err != authn.ErrAPIKeyExpired {
				t.Fatalf("key expired at %v checked at %v: %v", expires, base, err)
			}
		default:
			if err != nil {
				t.Fatalf("valid key refused: %v", err)
			}
		}
		if _, err := v.Verify(context.Background(), "avb_"+secret[4:46]+"!"); err != authn.ErrInvalidAPIKey {
			t.Fatalf("malformed key: %v", err)
		}
		other, _, _ := authn.NewAPIKey()
		if _, err := v.Verify(context.Background(), other); err != authn.ErrInvalidAPIKey {
			t.Fatalf("unknown key: %v", err)
		}
	})
}
