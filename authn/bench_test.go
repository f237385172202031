package authn_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// keyFixture is a migrated database with one tenant and one key, and a
// subscribed invalidation bus.
func keyFixture(b *testing.B) (*store.DB, *invalidation.Bus, string) {
	b.Helper()
	db, _ := testenv.AppDB(b)
	ten := &store.Tenant{Name: "Bench", Slug: "bench", Tier: store.TierPro}
	if err := db.Tenants().Create(b.Context(), ten); err != nil {
		b.Fatal(err)
	}
	secret, prefix, hash := authn.NewAPIKey()
	if err := db.APIKeys().Create(tenancy.With(b.Context(), ten.ID), &store.APIKey{Name: "b", Prefix: prefix, Hash: hash, Scopes: []string{"admin"}}); err != nil {
		b.Fatal(err)
	}
	opts, _ := redis.ParseURL(testenv.RedisURL(b))
	rdb := redis.NewClient(opts)
	b.Cleanup(func() { _ = rdb.Close() })
	bus := invalidation.New(rdb, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go bus.Run(ctx)
	for !bus.Healthy() {
		time.Sleep(5 * time.Millisecond)
	}
	return db, bus, secret
}

// BenchmarkAPIKeyVerify: a cached verification against one that reads the
// key from PostgreSQL every time.
func BenchmarkAPIKeyVerify(b *testing.B) {
	db, bus, secret := keyFixture(b)
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{{"cached", 30 * time.Second}, {"uncached", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			v := authn.NewAPIKeys(db.APIKeys(), bus, bc.ttl)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, secret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJWTVerify verifies an RS256 token with go-oidc (JWKS cached).
func BenchmarkJWTVerify(b *testing.B) {
	mux := http.NewServeMux()
	ts := httptest.NewServer(mux)
	defer ts.Close()
	iss, err := authn.NewDevIssuer(ts.URL + "/realms/avb")
	if err != nil {
		b.Fatal(err)
	}
	mux.Handle("/", iss.Handler())
	tok, err := iss.Issue(authn.Token{Subject: "u", TenantID: "t", Roles: []string{"admin"}, Audience: "avb-api"})
	if err != nil {
		b.Fatal(err)
	}
	v := authn.NewOIDC(iss.Issuer(), "avb-api", nil)
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
