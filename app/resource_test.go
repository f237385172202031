package app_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/agentvoicebox/avb/store"
)

// items is a list field of a decoded response (absent when empty).
func items(m map[string]any, key string) []any {
	l, _ := m[key].([]any)
	return l
}

// str digs a string out of a decoded JSON response: str(res, "project", "id").
func str(m map[string]any, path ...string) string {
	var v any = m
	for _, k := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[k]
	}
	s, _ := v.(string)
	return s
}

func TestProjectsCRUDPagingAndLimits(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("projects", store.TierStarter)
	dev := bearer(p.token("dev", ten.ID.String(), "developer"))
	viewer := bearer(p.token("vic", ten.ID.String(), "viewer"))

	// Create is idempotent by request id.
	body := `{"requestId":"6f1c1f5e-4c1b-4d61-9d0f-6f35c7b0a001","name":"Support Bot","description":"tier 1",
		"voiceDefaults":{"voice":"en-us","turnDetection":{"silenceDurationMs":700}}}`
	first := wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", body, dev...))
	again := wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", body, dev...))
	id := str(first, "project", "id")
	if id == "" || str(again, "project", "id") != id {
		t.Fatalf("retried create made another project: %v vs %v", first, again)
	}
	wantErr(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"support bot"}`, dev...), 409, "already_exists", "already_exists")
	wantErr(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"x"}`, viewer...), 403, "permission_denied", "permission_denied")

	// Viewers read; the update mask limits the change.
	got := wantOK(t, p.call("/avb.v1.ProjectService/GetProject", `{"projectId":"`+id+`"}`, viewer...))
	if str(got, "project", "voiceDefaults", "voice") != "en-us" {
		t.Fatalf("voice defaults not kept: %v", got)
	}
	up := wantOK(t, p.call("/avb.v1.ProjectService/UpdateProject", `{"projectId":"`+id+`","project":{"name":"ignored","voiceDefaults":{"voice":"en-gb"}},"updateMask":"voiceDefaults.voice"}`, dev...))
	if str(up, "project", "name") != "Support Bot" || str(up, "project", "voiceDefaults", "voice") != "en-gb" ||
		up["project"].(map[string]any)["voiceDefaults"].(map[string]any)["turnDetection"] == nil {
		t.Fatalf("mask did not limit the update: %v", up)
	}
	wantErr(t, p.call("/avb.v1.ProjectService/UpdateProject", `{"projectId":"`+id+`","project":{},"updateMask":"id"}`, dev...), 400, "invalid_argument", "validation_failed")
	wantErr(t, p.call("/avb.v1.ProjectService/UpdateProject", `{"projectId":"`+id+`","project":{"name":""},"updateMask":"name"}`, dev...), 400, "invalid_argument", "validation_failed")
	wantErr(t, p.call("/avb.v1.ProjectService/UpdateProject", `{"projectId":"`+id+`","project":{}}`, viewer...), 403, "permission_denied", "permission_denied")

	// The starter tier allows 5 projects.
	for i := range 4 {
		wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", fmt.Sprintf(`{"name":"p%d"}`, i), dev...))
	}
	wantErr(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"one too many"}`, dev...), 429, "resource_exhausted", "tenant_limit_exceeded")

	// Paging by name visits each project once, in order, with filters.
	var names []string
	token := ""
	for {
		res := wantOK(t, p.call("/avb.v1.ProjectService/ListProjects", fmt.Sprintf(`{"pageSize":2,"orderBy":"RESOURCE_ORDER_NAME_DESC","pageToken":%q}`, token), viewer...))
		for _, it := range items(res, "projects") {
			names = append(names, it.(map[string]any)["name"].(string))
		}
		if token, _ = res["nextPageToken"].(string); token == "" {
			break
		}
	}
	if want := []string{"Support Bot", "p3", "p2", "p1", "p0"}; !slices.Equal(names, want) {
		t.Fatalf("paged %v, want %v", names, want)
	}
	res := wantOK(t, p.call("/avb.v1.ProjectService/ListProjects", `{"nameContains":"SUPPORT"}`, viewer...))
	if n := len(items(res, "projects")); n != 1 {
		t.Fatalf("name filter kept %d", n)
	}
	wantErr(t, p.call("/avb.v1.ProjectService/ListProjects", `{"pageToken":"`+token+`x"}`, viewer...), 400, "invalid_argument", "invalid_page_token")

	// Another tenant sees nothing of it.
	other := p.tenant("projects-other", store.TierStarter)
	stranger := bearer(p.token("eve", other.ID.String(), "admin"))
	wantErr(t, p.call("/avb.v1.ProjectService/GetProject", `{"projectId":"`+id+`"}`, stranger...), 403, "permission_denied", "permission_denied")
	if n := len(items(wantOK(t, p.call("/avb.v1.ProjectService/ListProjects", `{}`, stranger...)), "projects")); n != 0 {
		t.Fatalf("another tenant lists %d projects", n)
	}

	// Deleting needs manage (admin), and frees a slot.
	wantErr(t, p.call("/avb.v1.ProjectService/DeleteProject", `{"projectId":"`+id+`"}`, dev...), 403, "permission_denied", "permission_denied")
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	wantOK(t, p.call("/avb.v1.ProjectService/DeleteProject", `{"projectId":"`+id+`"}`, admin...))
	wantErr(t, p.call("/avb.v1.ProjectService/GetProject", `{"projectId":"`+id+`"}`, admin...), 404, "not_found", "not_found")
	wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"replacement"}`, dev...))
}

func TestProjectMembersGrantAccessToOneProject(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("members", store.TierPro)
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	a := str(wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"A"}`, admin...)), "project", "id")
	b := str(wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"B"}`, admin...)), "project", "id")

	// A user with no tenant role, once known, gets developer on A only.
	bob := p.token("bob", ten.ID.String())
	bobID := str(wantOK(t, p.call("/avb.v1.UserService/GetMe", `{}`, bearer(bob)...)), "user", "id")
	wantErr(t, p.call("/avb.v1.ProjectService/GetProject", `{"projectId":"`+a+`"}`, bearer(bob)...), 403, "permission_denied", "permission_denied")
	wantOK(t, p.call("/avb.v1.ProjectService/AddProjectMember", `{"projectId":"`+a+`","userId":"`+bobID+`","role":"PROJECT_ROLE_DEVELOPER"}`, admin...))
	wantOK(t, p.call("/avb.v1.ProjectService/UpdateProject", `{"projectId":"`+a+`","project":{"description":"bob was here"},"updateMask":"description"}`, bearer(bob)...))
	wantErr(t, p.call("/avb.v1.ProjectService/GetProject", `{"projectId":"`+b+`"}`, bearer(bob)...), 403, "permission_denied", "permission_denied")
	wantErr(t, p.call("/avb.v1.ProjectService/DeleteProject", `{"projectId":"`+a+`"}`, bearer(bob)...), 403, "permission_denied", "permission_denied")

	members := items(wantOK(t, p.call("/avb.v1.ProjectService/ListProjectMembers", `{"projectId":"`+a+`"}`, admin...)), "members")
	if len(members) != 1 || members[0].(map[string]any)["role"] != "PROJECT_ROLE_DEVELOPER" {
		t.Fatalf("members: %v", members)
	}
	wantOK(t, p.call("/avb.v1.ProjectService/RemoveProjectMember", `{"projectId":"`+a+`","userId":"`+bobID+`","role":"PROJECT_ROLE_DEVELOPER"}`, admin...))
	wantErr(t, p.call("/avb.v1.ProjectService/GetProject", `{"projectId":"`+a+`"}`, bearer(bob)...), 403, "permission_denied", "permission_denied")
	wantErr(t, p.call("/avb.v1.ProjectService/RemoveProjectMember", `{"projectId":"`+a+`","userId":"`+bobID+`","role":"PROJECT_ROLE_DEVELOPER"}`, admin...), 404, "not_found", "not_found")
}

func TestPersonasVoiceConfigsAndThemesLayerIntoSessions(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("layers", store.TierPro)
	dev := bearer(p.token("dev", ten.ID.String(), "developer"))
	proj := str(wantOK(t, p.call("/avb.v1.ProjectService/CreateProject",
		`{"name":"Concierge","voiceDefaults":{"voice":"en-us","model":"scripted","instructions":"project","turnDetection":{"silenceDurationMs":800,"threshold":0.6}}}`, dev...)), "project", "id")
	vc := str(wantOK(t, p.call("/avb.v1.VoiceConfigService/CreateVoiceConfig",
		`{"voiceConfig":{"projectId":"`+proj+`","name":"Phone","voice":"en-gb","turnDetection":{"silenceDurationMs":400},"phraseHints":["yes","no"]}}`, dev...)), "voiceConfig", "id")
	persona := str(wantOK(t, p.call("/avb.v1.PersonaService/CreatePersona",
		`{"persona":{"name":"Ada","instructions":"You are Ada.","tools":[{"name":"lookup_order","parameters":{"type":"object"}}]}}`, dev...)), "persona", "id")

	sess := wantOK(t, p.call("/avb.v1.SessionService/CreateSession",
		`{"projectId":"`+proj+`","voiceConfigId":"`+vc+`","personaId":"`+persona+`","config":{"model":"scripted"}}`, dev...))
	cfg := sess["session"].(map[string]any)["config"].(map[string]any)
	td := cfg["turnDetection"].(map[string]any)
	if cfg["voice"] != "en-gb" || cfg["instructions"] != "You are Ada." || td["silenceDurationMs"] != float64(400) ||
		td["threshold"] != 0.6 || len(cfg["phraseHints"].([]any)) != 2 {
		t.Fatalf("layers not applied in order: %v", cfg)
	}

	// A voice config of another project cannot be used, and unknown ids are named.
	other := str(wantOK(t, p.call("/avb.v1.ProjectService/CreateProject", `{"name":"Other"}`, dev...)), "project", "id")
	r := p.call("/avb.v1.SessionService/CreateSession", `{"projectId":"`+other+`","voiceConfigId":"`+vc+`"}`, dev...)
	wantErr(t, r, 400, "invalid_argument", "validation_failed")
	if v := fieldViolations(r.body); !slices.Equal(v, []string{"voice_config_id"}) {
		t.Fatalf("violations %v", v)
	}
	r = p.call("/avb.v1.SessionService/CreateSession", `{"personaId":"00000000-0000-4000-8000-000000000000"}`, dev...)
	if v := fieldViolations(r.body); !slices.Equal(v, []string{"persona_id"}) {
		t.Fatalf("violations %v", v)
	}

	// Persona validation names each bad field; the name is required on create.
	r = p.call("/avb.v1.PersonaService/CreatePersona", `{"persona":{"name":"","tools":[{"name":"9bad"}]}}`, dev...)
	wantErr(t, r, 400, "invalid_argument", "validation_failed")
	r = p.call("/avb.v1.PersonaService/CreatePersona", `{"persona":{"tools":[{"name":"ok"}]}}`, dev...)
	if v := fieldViolations(r.body); !slices.Equal(v, []string{"persona.name"}) {
		t.Fatalf("violations %v", v)
	}
	// Personas and voice configs filter by project.
	if n := len(items(wantOK(t, p.call("/avb.v1.VoiceConfigService/ListVoiceConfigs", `{"projectId":"`+other+`"}`, dev...)), "voiceConfigs")); n != 0 {
		t.Fatalf("project filter kept %d", n)
	}
	upd := wantOK(t, p.call("/avb.v1.PersonaService/UpdatePersona", `{"personaId":"`+persona+`","persona":{"voice":"en-us"},"updateMask":"voice"}`, dev...))
	if str(upd, "persona", "voice") != "en-us" || str(upd, "persona", "instructions") != "You are Ada." {
		t.Fatalf("persona update: %v", upd)
	}

	// One default theme at a time.
	t1 := str(wantOK(t, p.call("/avb.v1.ThemeService/CreateTheme", `{"theme":{"name":"Light","primaryColor":"#112233","isDefault":true}}`, dev...)), "theme", "id")
	t2 := str(wantOK(t, p.call("/avb.v1.ThemeService/CreateTheme", `{"theme":{"name":"Dark","primaryColor":"#000000"}}`, dev...)), "theme", "id")
	wantOK(t, p.call("/avb.v1.ThemeService/UpdateTheme", `{"themeId":"`+t2+`","theme":{"isDefault":true},"updateMask":"isDefault"}`, dev...))
	if d := wantOK(t, p.call("/avb.v1.ThemeService/GetTheme", `{"themeId":"`+t1+`"}`, dev...))["theme"].(map[string]any)["isDefault"]; d != nil {
		t.Fatalf("two default themes")
	}
	r = p.call("/avb.v1.ThemeService/CreateTheme", `{"theme":{"name":"Bad","primaryColor":"blue","logoUrl":"http://x"}}`, dev...)
	if v := fieldViolations(r.body); !slices.Equal(v, []string{"theme.primary_color", "theme.logo_url"}) {
		t.Fatalf("violations %v", v)
	}
	// Deleting the project takes its voice configs with it.
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	wantOK(t, p.call("/avb.v1.SessionService/TerminateSession", `{"sessionId":"`+str(sess, "session", "id")+`"}`, admin...))
	wantOK(t, p.call("/avb.v1.ProjectService/DeleteProject", `{"projectId":"`+proj+`"}`, admin...))
	if !strings.Contains(p.call("/avb.v1.VoiceConfigService/GetVoiceConfig", `{"voiceConfigId":"`+vc+`"}`, admin...).raw, "not_found") {
		t.Fatal("voice config outlived its project")
	}
}

// A client that retries CreateSession (a lost response, a flaky mobile
// network) gets the session its first try made, however many retries race;
// a new request id makes a new session. The session records its creator.
func TestCreateSessionIsRetrySafe(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("retries", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))
	asKey := []string{"X-API-Key", str(key, "secret")}
	body := `{"requestId":"0f8e2d9c-1b7a-4c3e-8d5f-6a4b3c2d1e0f","config":{"voice":"en-us"}}`

	ids := make(chan string, 6)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			r := p.call("/avb.v1.SessionService/CreateSession", body, asKey...)
			if r.status != 200 {
				t.Errorf("retry: %d %s", r.status, r.raw)
			}
			ids <- str(r.body, "session", "id")
		})
	}
	wg.Wait()
	close(ids)
	first := ""
	for id := range ids {
		if first == "" {
			first = id
		}
		if id == "" || id != first {
			t.Fatalf("retries made different sessions: %q and %q", first, id)
		}
	}
	other := wantOK(t, p.call("/avb.v1.SessionService/CreateSession", `{"requestId":"6c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"}`, asKey...))
	if str(other, "session", "id") == first {
		t.Fatal("a new request id returned the old session")
	}
	list := wantOK(t, p.call("/avb.v1.SessionService/ListSessions", `{}`, asKey...))
	if n := len(items(list, "sessions")); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	got := wantOK(t, p.call("/avb.v1.SessionService/GetSession", `{"sessionId":"`+first+`"}`, asKey...))
	if str(got, "session", "apiKeyId") != str(key, "apiKey", "id") {
		t.Fatalf("session creator %v, want the key %s", got, str(key, "apiKey", "id"))
	}
	wantErr(t, p.call("/avb.v1.SessionService/CreateSession", `{"requestId":"not-a-uuid"}`, asKey...), 400, "invalid_argument", "validation_failed")
}
