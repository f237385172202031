package app_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
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

// BenchmarkProtocols lists a page of 20 projects the ways clients call the
// API: Connect JSON (the baseline, as curl and the TypeScript SDK), REST
// through the vanguard transcoder, and gRPC from grpc-go.
func BenchmarkProtocols(b *testing.B) {
	issuer := startIssuer(b)
	owner := testenv.Postgres(b)
	p := startPlatform(b, identityConfig(b, owner, issuer.Issuer(), map[string]string{"AVB_LOG_LEVEL": "error"}), issuer, owner, app.WithDecider(allowAll{}))
	ten := p.tenant("bench", store.TierEnterprise)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"b","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...).body["secret"].(string)
	for i := range 20 {
		if r := p.call("/avb.v1.ProjectService/CreateProject", fmt.Sprintf(`{"name":"p%02d"}`, i), "X-API-Key", key); r.status != 200 {
			b.Fatal(r.raw)
		}
	}
	b.Run("connect_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := p.call("/avb.v1.ProjectService/ListProjects", `{"pageSize":20}`, "X-API-Key", key); r.status != 200 {
				b.Fatal(r.raw)
			}
		}
	})
	b.Run("rest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := p.rest(http.MethodGet, "/api/v2/projects?pageSize=20", "", "X-API-Key", key); r.status != 200 {
				b.Fatal(r.raw)
			}
		}
	})
	b.Run("grpc_go", func(b *testing.B) {
		conn, err := grpc.NewClient(strings.TrimPrefix(p.base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", key)
		b.ReportAllocs()
		for b.Loop() {
			var res avbv1.ListProjectsResponse
			if err := conn.Invoke(ctx, avbv1connect.ProjectServiceListProjectsProcedure, &avbv1.ListProjectsRequest{PageSize: 20}, &res); err != nil || len(res.GetProjects()) != 20 {
				b.Fatal(err, len(res.GetProjects()))
			}
		}
	})
}
