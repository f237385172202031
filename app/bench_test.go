package app_test

import (
	"context"
	"testing"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/store"
)

// allowAll is a Decider that allows everything: the baseline that shows what
// the SpiceDB check adds.
type allowAll struct{}

func (allowAll) Allowed(context.Context, *authn.Principal, policy.Rule, string) (bool, error) {
	return true, nil
}

// BenchmarkAuthorizedRPC runs TenantService.GetTenant (API key auth, tenant
// resolution, RLS read) with the SpiceDB permission check and without it.
func BenchmarkAuthorizedRPC(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []app.Option
	}{{"spicedb", nil}, {"no_authz", []app.Option{app.WithDecider(allowAll{})}}} {
		b.Run(bc.name, func(b *testing.B) {
			issuer := startIssuer(b)
			owner := testenv.Postgres(b)
			p := startPlatform(b, identityConfig(b, owner, issuer.Issuer(), map[string]string{"AVB_LOG_LEVEL": "error"}), issuer, owner, bc.opts...)
			ten := p.tenant("bench", store.TierPro)
			admin := p.token("ada", ten.ID.String(), "admin")
			r := p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"b","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...)
			key := r.body["secret"].(string)
			b.ReportAllocs()
			for b.Loop() {
				if r := p.call("/avb.v1.TenantService/GetTenant", "{}", "X-API-Key", key); r.status != 200 {
					b.Fatal(r.raw)
				}
			}
		})
	}
}
