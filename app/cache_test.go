package app_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentvoicebox/avb/app"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
)

// CreateSession resolves its layers (project, voice config, persona) from
// the tenant-scoped cache; a change made on one instance is what the next
// session on another instance gets, and a deleted project takes its
// personas with it, in the cache too.
func TestSessionLayersCachedAndFreshAcrossInstances(t *testing.T) {
	t.Parallel()
	issuer := startIssuer(t)
	owner := testenv.Postgres(t)
	a := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), nil), issuer, owner, app.WithDecider(&countingDecider{}))
	b := startPlatform(t, identityConfig(t, owner, issuer.Issuer(), map[string]string{"AVB_DATABASE_MIGRATE_ON_START": "false"}),
		issuer, owner, app.WithDecider(&countingDecider{}))
	ten := a.tenant("cached", store.TierPro)
	dev := bearer(a.token("dev", ten.ID.String(), "developer"))
	proj := str(wantOK(t, a.call("/avb.v1.ProjectService/CreateProject", `{"name":"Desk","voiceDefaults":{"voice":"en-us"}}`, dev...)), "project", "id")
	persona := str(wantOK(t, a.call("/avb.v1.PersonaService/CreatePersona",
		`{"persona":{"projectId":"`+proj+`","name":"Ada","instructions":"first"}}`, dev...)), "persona", "id")
	session := `{"personaId":"` + persona + `"}` // not in the project: it can be deleted
	instructions := func(p *platform) string {
		t.Helper()
		s := wantOK(t, p.call("/avb.v1.SessionService/CreateSession", session, dev...))
		return s["session"].(map[string]any)["config"].(map[string]any)["instructions"].(string)
	}
	misses := testutil.ToFloat64(b.app.Metrics.CacheMisses.WithLabelValues("personas"))
	for range 3 {
		if got := instructions(b); got != "first" {
			t.Fatalf("instructions %q", got)
		}
	}
	if hits := testutil.ToFloat64(b.app.Metrics.CacheHits.WithLabelValues("personas")); hits < 2 {
		t.Fatalf("persona cache: %v hits, %v misses", hits, testutil.ToFloat64(b.app.Metrics.CacheMisses.WithLabelValues("personas"))-misses)
	}
	wantOK(t, a.call("/avb.v1.PersonaService/UpdatePersona", `{"personaId":"`+persona+`","persona":{"instructions":"second"},"updateMask":"instructions"}`, dev...))
	if got := instructions(b); got != "second" {
		t.Fatalf("after the update on another instance: instructions %q", got)
	}
	wantOK(t, a.call("/avb.v1.ProjectService/DeleteProject", `{"projectId":"`+proj+`"}`, dev...))
	r := b.call("/avb.v1.SessionService/CreateSession", `{"personaId":"`+persona+`"}`, dev...)
	if r.status != http.StatusBadRequest {
		t.Fatalf("a persona of a deleted project: %d %s", r.status, r.raw)
	}
}

// BenchmarkCreateSessionLayers is CreateSession with a project, voice
// config and persona, through the whole stack, with the row cache and
// without it (AVB_CACHE_TTL=0), in the same run.
func BenchmarkCreateSessionLayers(b *testing.B) {
	issuer := startIssuer(b)
	owner := testenv.Postgres(b)
	for _, bc := range []struct{ name, ttl string }{{"cached", "10m"}, {"uncached", "0s"}} {
		// The platform is made once; b.Run calls its function once per round.
		p := startPlatform(b, identityConfig(b, owner, issuer.Issuer(), map[string]string{"AVB_LOG_LEVEL": "error", "AVB_CACHE_TTL": bc.ttl,
			"AVB_DATABASE_MIGRATE_ON_START": "true"}), issuer, owner, app.WithDecider(allowAll{}))
		ten := p.tenant("bench"+bc.name, store.TierEnterprise)
		admin := p.token("ada"+bc.name, ten.ID.String(), "admin")
		auth := connect.WithInterceptors(bearerInterceptor(admin))
		proj, err := avbv1connect.NewProjectServiceClient(http.DefaultClient, p.base, auth).
			CreateProject(context.Background(), connect.NewRequest(&avbv1.CreateProjectRequest{Name: "B"}))
		if err != nil {
			b.Fatal(err)
		}
		per, err := avbv1connect.NewPersonaServiceClient(http.DefaultClient, p.base, auth).
			CreatePersona(context.Background(), connect.NewRequest(&avbv1.CreatePersonaRequest{Persona: &avbv1.Persona{
				ProjectId: proj.Msg.GetProject().GetId(), Name: "P", Instructions: "be brief"}}))
		if err != nil {
			b.Fatal(err)
		}
		sessions := avbv1connect.NewSessionServiceClient(http.DefaultClient, p.base, auth)
		req := &avbv1.CreateSessionRequest{ProjectId: proj.Msg.GetProject().GetId(), PersonaId: per.Msg.GetPersona().GetId()}
		b.Run(bc.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := sessions.CreateSession(context.Background(), connect.NewRequest(req)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
