package app_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"

	"github.com/agentvoicebox/avb/policy"
	"github.com/agentvoicebox/avb/store"
)

// rest sends a REST request, as curl would.
func (p *platform) rest(method, path, body string, headers ...string) result {
	p.t.Helper()
	req, err := http.NewRequest(method, p.base+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return result{status: res.StatusCode, raw: string(raw), header: res.Header}
}

// httpRules lists every RPC's REST route from the contract.
func httpRules(t *testing.T) map[string]*annotations.HttpRule {
	t.Helper()
	out := map[string]*annotations.HttpRule{}
	for md := range policy.Methods() {
		if r, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule); ok && r != nil {
			out[string(md.FullName())] = r
		}
	}
	return out
}

func ruleRoute(r *annotations.HttpRule) (string, string) {
	switch {
	case r.GetGet() != "":
		return http.MethodGet, r.GetGet()
	case r.GetPost() != "":
		return http.MethodPost, r.GetPost()
	case r.GetPatch() != "":
		return http.MethodPatch, r.GetPatch()
	case r.GetPut() != "":
		return http.MethodPut, r.GetPut()
	case r.GetDelete() != "":
		return http.MethodDelete, r.GetDelete()
	}
	return "", ""
}

// Every unary RPC has a REST route under /api/v2/, documented in
// /openapi.yaml, and served: without credentials each answers
// unauthenticated (or, for public ones, not a routing error).
func TestEveryUnaryRPCHasADocumentedRESTRoute(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	doc := p.rest(http.MethodGet, "/openapi.yaml", "")
	if doc.status != 200 || !strings.HasPrefix(doc.header.Get("Content-Type"), "application/yaml") {
		t.Fatalf("/openapi.yaml: %d %s", doc.status, doc.header.Get("Content-Type"))
	}
	rules := httpRules(t)
	unary := 0
	for md := range policy.Methods() {
		_, has := rules[string(md.FullName())]
		if streaming := md.IsStreamingClient() || md.IsStreamingServer(); streaming == has {
			t.Errorf("%s: streaming %v but REST route %v", md.FullName(), streaming, has)
		}
		if !md.IsStreamingClient() && !md.IsStreamingServer() {
			unary++
		}
	}
	param := regexp.MustCompile(`\{[a-z_]+\}`)
	for name, r := range rules {
		method, path := ruleRoute(r)
		if !strings.HasPrefix(path, "/api/v2/") {
			t.Errorf("%s: route %s is not under /api/v2/", name, path)
		}
		documented := param.ReplaceAllStringFunc(path, func(p string) string { // OpenAPI names parameters as JSON does
			parts := strings.Split(strings.Trim(p, "{}"), "_")
			for i := 1; i < len(parts); i++ {
				parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
			}
			return "{" + strings.Join(parts, "") + "}"
		})
		if !strings.Contains(doc.raw, "\n    "+documented+":\n") {
			t.Errorf("%s: %s is not in /openapi.yaml", name, path)
		}
		body := ""
		if r.GetBody() != "" {
			body = "{}"
		}
		res := p.rest(method, param.ReplaceAllString(path, uuid.NewString()), body)
		if name == "avb.v1.SystemService.GetServerInfo" {
			if res.status != 200 {
				t.Errorf("%s %s: %d %s", method, path, res.status, res.raw)
			}
			continue
		}
		if res.status != 401 || !strings.Contains(res.raw, "unauthenticated") {
			t.Errorf("%s %s: %d %s", method, path, res.status, res.raw)
		}
	}
	if len(rules) != unary || unary < 55 {
		t.Fatalf("%d REST routes for %d unary RPCs", len(rules), unary)
	}
}

// The REST routes are the same API: create, list with query parameters,
// update with a mask in the query, errors with reasons, delete.
func TestRESTRoutesServeTheSameAPI(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("rest", store.TierPro)
	admin := bearer(p.token("ada", ten.ID.String(), "admin"))
	created := p.rest(http.MethodPost, "/api/v2/projects", `{"name":"Over REST","voiceDefaults":{"voice":"en-us"}}`, admin...)
	if created.status != 200 || !strings.Contains(created.raw, `"name":"Over REST"`) {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	id := regexp.MustCompile(`"id":"([0-9a-f-]{36})"`).FindStringSubmatch(created.raw)[1]
	if l := p.rest(http.MethodGet, "/api/v2/projects?pageSize=1&nameContains=rest&orderBy=RESOURCE_ORDER_NAME_ASC", "", admin...); l.status != 200 || !strings.Contains(l.raw, id) {
		t.Fatalf("list: %d %s", l.status, l.raw)
	}
	up := p.rest(http.MethodPatch, "/api/v2/projects/"+id+"?updateMask=description", `{"name":"ignored","description":"patched"}`, admin...)
	if up.status != 200 || !strings.Contains(up.raw, `"description":"patched"`) || !strings.Contains(up.raw, `"name":"Over REST"`) {
		t.Fatalf("patch: %d %s", up.status, up.raw)
	}
	bad := p.rest(http.MethodPost, "/api/v2/projects", `{"name":""}`, admin...)
	if bad.status != 400 || !strings.Contains(bad.raw, "validation_failed") || !strings.Contains(bad.raw, `"field":"name"`) {
		t.Fatalf("invalid create: %d %s", bad.status, bad.raw)
	}
	if d := p.rest(http.MethodDelete, "/api/v2/projects/"+id, "", admin...); d.status != 200 {
		t.Fatalf("delete: %d %s", d.status, d.raw)
	}
	if g := p.rest(http.MethodGet, "/api/v2/projects/"+id, "", admin...); g.status != 404 || !strings.Contains(g.raw, "not_found") {
		t.Fatalf("get after delete: %d %s", g.status, g.raw)
	}
}
