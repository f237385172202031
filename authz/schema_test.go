package authz_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/agentvoicebox/avb/authz"
	"github.com/agentvoicebox/avb/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// client returns a client on a fresh, isolated SpiceDB store with the schema.
func client(t testing.TB) *authz.Client {
	t.Helper()
	addr, token := testenv.SpiceDB(t)
	c, err := authz.Dial(addr, token, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.WriteSchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func obj(typ, id string) authz.Object { return authz.Object{Type: typ, ID: id} }

// The schema's role model, asserted against a real SpiceDB: each role grants
// exactly the permissions the documentation promises, project roles add to
// tenant roles, API keys act through the roles their scopes map to, and
// nothing crosses tenants.
func TestSchemaAssertions(t *testing.T) {
	t.Parallel()
	c := client(t)
	ctx := context.Background()
	t1, t2 := obj("tenant", "t1"), obj("tenant", "t2")
	rels := []authz.Relationship{
		{Resource: authz.Platform, Relation: "sysadmin", Subject: obj("user", "root")},
		{Resource: t1, Relation: "sysadmin", Subject: authz.Platform, SubjectRelation: "sysadmin"},
		{Resource: t2, Relation: "sysadmin", Subject: authz.Platform, SubjectRelation: "sysadmin"},
		{Resource: t1, Relation: "admin", Subject: obj("user", "ada")},
		{Resource: t1, Relation: "developer", Subject: obj("user", "dev")},
		{Resource: t1, Relation: "operator", Subject: obj("user", "ops")},
		{Resource: t1, Relation: "viewer", Subject: obj("user", "vic")},
		{Resource: t1, Relation: "billing", Subject: obj("user", "bill")},
		{Resource: t2, Relation: "admin", Subject: obj("user", "eve")},
		{Resource: obj("api_key", "k1"), Relation: "tenant", Subject: t1},
		{Resource: t1, Relation: "operator", Subject: obj("api_key", "k1")},
		{Resource: obj("project", "p1"), Relation: "tenant", Subject: t1},
		{Resource: obj("project", "p1"), Relation: "developer", Subject: obj("user", "vic")},
		{Resource: obj("session", "s1"), Relation: "project", Subject: obj("project", "p1")},
		{Resource: obj("session", "s1"), Relation: "tenant", Subject: t1},
		{Resource: obj("session", "s1"), Relation: "owner", Subject: obj("api_key", "k1")},
		{Resource: obj("persona", "pe1"), Relation: "tenant", Subject: t1},
		{Resource: obj("theme", "th1"), Relation: "tenant", Subject: t1},
		{Resource: obj("voice_config", "vc1"), Relation: "project", Subject: obj("project", "p1")},
	}
	token, err := c.Write(ctx, rels, nil)
	if err != nil {
		t.Fatal(err)
	}
	perms := []string{"manage", "administrate", "develop", "operate", "view", "billing_access"}
	want := map[string][]string{ // subject -> tenant t1 permissions
		"user:root":   perms,
		"user:ada":    perms,
		"user:dev":    {"develop", "operate", "view"},
		"user:ops":    {"operate", "view"},
		"user:vic":    {"view"},
		"user:bill":   {"view", "billing_access"},
		"user:eve":    nil,
		"api_key:k1":  {"operate", "view"},
		"user:nobody": nil,
	}
	for sub, allowed := range want {
		typ, id, _ := cut(sub)
		for _, p := range perms {
			got, err := c.Check(ctx, t1, p, obj(typ, id), token)
			if err != nil {
				t.Fatal(err)
			}
			if got != slices.Contains(allowed, p) {
				t.Errorf("%s on tenant:t1#%s = %v, want %v", sub, p, got, !got)
			}
		}
	}
	assertions := []struct {
		resource authz.Object
		perm     string
		subject  string
		want     bool
	}{
		{obj("tenant", "t2"), "view", "user:ada", false},         // no crossing tenants
		{obj("tenant", "t2"), "manage", "user:root", true},       // sysadmins everywhere
		{obj("project", "p1"), "develop", "user:vic", true},      // project role adds to tenant role
		{obj("project", "p1"), "manage", "user:vic", false},      //   ...and no more
		{obj("project", "p1"), "view", "user:bill", true},        // tenant view reaches projects
		{obj("session", "s1"), "operate", "api_key:k1", true},    // owner operates its session
		{obj("session", "s1"), "manage", "api_key:k1", false},    //   ...but does not manage it
		{obj("session", "s1"), "view", "user:eve", false},        // other tenant's admin sees nothing
		{obj("persona", "pe1"), "manage", "user:dev", true},      // developers build personas
		{obj("persona", "pe1"), "manage", "user:ops", false},     //   operators do not
		{obj("theme", "th1"), "view", "user:vic", true},          // viewers see themes
		{obj("voice_config", "vc1"), "manage", "user:vic", true}, // via the project developer role
		{obj("api_key", "k1"), "manage", "user:dev", true},       // developers manage keys
		{obj("api_key", "k1"), "manage", "api_key:k1", false},    // a realtime key cannot manage keys
		{authz.Platform, "manage", "user:ada", false},            // tenant admins are not sysadmins
	}
	for _, a := range assertions {
		typ, id, _ := cut(a.subject)
		got, err := c.Check(ctx, a.resource, a.perm, obj(typ, id), token)
		if err != nil {
			t.Fatal(err)
		}
		if got != a.want {
			t.Errorf("%s:%s#%s@%s = %v, want %v", a.resource.Type, a.resource.ID, a.perm, a.subject, got, a.want)
		}
	}

	// Expected relations: who can view tenant t1, and what ada can develop.
	viewers, err := c.LookupSubjects(ctx, t1, "view", "user", token)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(viewers)
	if want := []string{"ada", "bill", "dev", "ops", "root", "vic"}; !slices.Equal(viewers, want) {
		t.Errorf("users who can view t1: %v, want %v", viewers, want)
	}
	projects, err := c.LookupResources(ctx, "project", "develop", obj("user", "vic"), token)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(projects, []string{"p1"}) {
		t.Errorf("projects vic develops: %v", projects)
	}

	// Revoking is seen by the next check that carries the revoke's token.
	token, err = c.Write(ctx, nil, []authz.Relationship{{Resource: t1, Relation: "admin", Subject: obj("user", "ada")}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Check(ctx, t1, "view", obj("user", "ada"), token); ok {
		t.Error("revoked admin still views t1")
	}
}

func cut(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// BenchmarkListScaling measures how filtering a list scales with the number
// of resources a caller can see: LookupResources (one streaming call) and
// CheckBulk (one call for a page of candidates).
func BenchmarkListScaling(b *testing.B) {
	c := client(b)
	ctx := context.Background()
	tenant := obj("tenant", "big")
	token, err := c.Write(ctx, []authz.Relationship{{Resource: tenant, Relation: "viewer", Subject: obj("user", "u")}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	have := 0
	for _, n := range []int{10, 100, 1000, 10000} {
		for have < n {
			var batch []authz.Relationship
			for ; have < n && len(batch) < 1000; have++ {
				batch = append(batch, authz.Relationship{Resource: obj("project", fmt.Sprintf("p%d", have)), Relation: "tenant", Subject: tenant})
			}
			if token, err = c.Write(ctx, batch, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("lookup_resources/%d", n), func(b *testing.B) {
			for b.Loop() {
				ids, err := c.LookupResources(ctx, "project", "view", obj("user", "u"), token)
				if err != nil || len(ids) != n {
					b.Fatalf("%d ids, %v", len(ids), err)
				}
			}
		})
		page := min(n, 500)
		resources := make([]authz.Object, page)
		for i := range resources {
			resources[i] = obj("project", fmt.Sprintf("p%d", i))
		}
		b.Run(fmt.Sprintf("check_bulk_page_of_%d/%d", page, n), func(b *testing.B) {
			for b.Loop() {
				if _, err := c.CheckBulk(ctx, resources, "view", obj("user", "u"), token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
