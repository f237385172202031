package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
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

// BenchmarkUnaryStack is P4: one unary read at 64 concurrent clients, in
// one run, three ways: a bare connect-go handler (the ceiling of the
// stack), the same ListProjects handler bare (only its tenant in the
// context), and ListProjects through the whole server (API key, rate
// limit, cached authorization, validation, tenant transaction). Each
// reports requests a second and p50/p99 latency; full_stack_no_limits is
// the whole server with the rate limits off, for what the limiter adds.
func BenchmarkUnaryStack(b *testing.B) {
	issuer := startIssuer(b)
	owner := testenv.Postgres(b)
	p := startPlatform(b, identityConfig(b, owner, issuer.Issuer(), map[string]string{"AVB_LOG_LEVEL": "error"}), issuer, owner)
	ten := p.tenant("p4", store.TierEnterprise)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"b","scopes":["API_KEY_SCOPE_ADMIN"]}`, bearer(admin)...).body["secret"].(string)
	if r := p.call("/avb.v1.ProjectService/CreateProject", `{"name":"p4"}`, "X-API-Key", key); r.status != 200 {
		b.Fatal(r.raw)
	}

	// The same platform without rate limits (no limiter call), sharing the
	// database: what the limiter adds.
	unlimited := startPlatform(b, identityConfig(b, owner, issuer.Issuer(), map[string]string{"AVB_LOG_LEVEL": "error",
		"AVB_DATABASE_MIGRATE_ON_START": "false", "AVB_RATE_LIMIT_ADMIN": "0", "AVB_RATE_LIMIT_API_KEY": "0", "AVB_RATE_LIMIT_DEFAULT": "0",
		"AVB_SPICEDB_ENDPOINT": p.cfg.SpiceDB.Endpoint, "AVB_SPICEDB_TOKEN": p.cfg.SpiceDB.Token}), issuer, owner)

	// The bare handlers compress as the server does (responses of 1 KiB and
	// more): connect-go's default gzips every response, which costs more
	// than the stack itself.
	compress := connect.WithCompressMinBytes(1024)
	bare := http.NewServeMux()
	bare.Handle(avbv1connect.NewSystemServiceHandler(server.NewSystemServer("v", "test", nil), compress))
	bareConnect := httptest.NewServer(bare)
	b.Cleanup(bareConnect.Close)
	handler := http.NewServeMux()
	handler.Handle(avbv1connect.NewProjectServiceHandler(server.NewProjectServer(server.Identity{DB: p.app.DB()}),
		connect.WithInterceptors(tenantOnly(ten.ID)), compress))
	bareHandler := httptest.NewServer(handler)
	b.Cleanup(bareHandler.Close)

	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	withKey := connect.WithInterceptors(keyInterceptor(key))
	cases := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"bare_connect", func(ctx context.Context) error {
			_, err := avbv1connect.NewSystemServiceClient(httpc, bareConnect.URL).GetServerInfo(ctx, connect.NewRequest(&avbv1.GetServerInfoRequest{}))
			return err
		}},
		{"bare_handler", func(ctx context.Context) error {
			_, err := avbv1connect.NewProjectServiceClient(httpc, bareHandler.URL).ListProjects(ctx, connect.NewRequest(&avbv1.ListProjectsRequest{PageSize: 1}))
			return err
		}},
		{"full_stack", func(ctx context.Context) error {
			_, err := avbv1connect.NewProjectServiceClient(httpc, p.base, withKey).ListProjects(ctx, connect.NewRequest(&avbv1.ListProjectsRequest{PageSize: 1}))
			return err
		}},
		{"full_stack_no_limits", func(ctx context.Context) error {
			_, err := avbv1connect.NewProjectServiceClient(httpc, unlimited.base, withKey).ListProjects(ctx, connect.NewRequest(&avbv1.ListProjectsRequest{PageSize: 1}))
			return err
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var mu sync.Mutex
			var took []time.Duration
			b.SetParallelism(64 / runtime.GOMAXPROCS(0))
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					if err := c.call(context.Background()); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				took = append(took, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			slices.Sort(took)
			if len(took) > 0 {
				b.ReportMetric(float64(len(took))/elapsed.Seconds(), "req/s")
				b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}

// tenantOnly puts one tenant into every request's context: the least a
// tenant handler needs, for measuring it bare.
func tenantOnly(id uuid.UUID) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			return next(tenancy.With(ctx, id), req)
		}
	})
}
