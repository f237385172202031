package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/voice/llm"
)

// DemoSlug is the tenant avb dev creates.
const DemoSlug = "demo"

// devTokenTTL is how long the printed tokens last.
const devTokenTTL = 12 * time.Hour

// Credentials are what avb dev hands the developer.
type Credentials struct {
	Tenant     *store.Tenant
	AdminToken string
	SysToken   string
	APIKey     string
}

// seed makes sure the demo tenant exists, with an API key (kept in the data
// dir across runs), and issues tokens from the development issuer.
func seed(ctx context.Context, a *app.App, dataDir string) (*Credentials, error) {
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.WaitAuthzReady(wait); err != nil {
		return nil, err
	}
	db := a.DB()
	t, err := db.Tenants().GetBySlug(ctx, DemoSlug)
	if errors.Is(err, store.ErrNotFound) {
		t = &store.Tenant{Name: "Demo", Slug: DemoSlug, Tier: store.TierPro}
		err = db.Tenants().Create(ctx, t)
	}
	if err != nil {
		return nil, fmt.Errorf("demo tenant: %w", err)
	}
	if err := a.Grants().TenantCreated(ctx, t); err != nil {
		return nil, fmt.Errorf("demo tenant grants: %w", err)
	}
	if err := seedProject(ctx, a, t); err != nil {
		return nil, err
	}
	c := &Credentials{Tenant: t}
	if iss := a.DevIssuer(); iss != nil {
		if c.AdminToken, err = iss.Issue(authn.Token{Subject: "dev|admin@demo.test", Email: "admin@demo.test", GivenName: "Demo",
			FamilyName: "Admin", TenantID: t.ID.String(), Roles: []string{"admin"}, Audience: "avb-api", TTL: devTokenTTL}); err != nil {
			return nil, err
		}
		if c.SysToken, err = iss.Issue(authn.Token{Subject: "dev|root@avb.test", Email: "root@avb.test",
			Roles: []string{authn.RoleSysadmin}, Audience: "avb-api", TTL: devTokenTTL}); err != nil {
			return nil, err
		}
	}
	keyFile := filepath.Join(dataDir, "demo-api-key")
	if b, err := os.ReadFile(keyFile); err == nil {
		secret := strings.TrimSpace(string(b))
		if k, err := db.APIKeys().ByHash(ctx, authn.HashAPIKey(secret)); err == nil && k.TenantID == t.ID && k.RevokedAt == nil {
			// Re-grant (idempotent): SpiceDB's datastore may be newer than the key.
			if err := a.Grants().KeyCreated(ctx, &store.APIKey{ID: k.ID, TenantID: k.TenantID, Scopes: k.Scopes}); err != nil {
				return nil, fmt.Errorf("demo api key grants: %w", err)
			}
			c.APIKey = secret
			return c, nil
		}
	}
	secret, prefix, hash := authn.NewAPIKey()
	k := &store.APIKey{Name: "avb dev", Description: "created by avb dev", Prefix: prefix, Hash: hash,
		Scopes: []string{"admin", "realtime", "billing"}}
	if err := db.APIKeys().Create(tenancy.With(ctx, t.ID), k); err != nil {
		return nil, fmt.Errorf("demo api key: %w", err)
	}
	if err := a.Grants().KeyCreated(ctx, k); err != nil {
		return nil, fmt.Errorf("demo api key grants: %w", err)
	}
	if err := os.WriteFile(keyFile, []byte(secret+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("save demo api key: %w", err)
	}
	c.APIKey = secret
	return c, nil
}

// DemoProject is the project avb dev gives the demo tenant.
const DemoProject = "Demo"

// seedProject makes sure the demo tenant has its project (once: a fixed
// request id makes a second run find the first's), with phrase hints the
// scripted model understands, so the first call is heard right.
func seedProject(ctx context.Context, a *app.App, t *store.Tenant) error {
	spec, err := protojson.Marshal(&avbv1.Project{
		Description:   "Created by avb dev: say \"please book a meeting for tomorrow at ten\".",
		VoiceDefaults: &avbv1.SessionConfig{PhraseHints: llm.DefaultScript.Phrases()},
	})
	if err != nil {
		return err
	}
	requestID := uuid.NewSHA1(t.ID, []byte("avb dev demo project"))
	row := &store.Resource{Name: DemoProject, Spec: spec, RequestID: &requestID}
	tctx := tenancy.With(ctx, t.ID)
	_, err = a.DB().Resources(store.Projects).Create(tctx, row)
	if errors.Is(err, store.ErrAlreadyExists) {
		return nil // the tenant has a project of that name: leave it be
	}
	if err != nil {
		return fmt.Errorf("demo project: %w", err)
	}
	if err := a.Grants().ResourceCreated(tctx, "project", row.ID, t.ID, nil); err != nil {
		return fmt.Errorf("demo project grants: %w", err)
	}
	return seedPhone(tctx, a, t, row.ID)
}

// DemoNumber is the phone number make dev gives the demo project: a
// softphone on this machine calls it without credentials.
const DemoNumber = "+15550100"

// seedPhone gives the demo project a phone number, and a trunk that takes
// calls from this machine.
func seedPhone(tctx context.Context, a *app.App, t *store.Tenant, project uuid.UUID) error {
	trunk, err := protojson.Marshal(&avbv1.SipTrunk{AllowedSources: []string{"127.0.0.1/32", "::1/128"}})
	if err != nil {
		return err
	}
	for _, r := range []struct {
		kind    store.ResourceKind
		obj     string
		row     *store.Resource
		project *uuid.UUID
	}{
		{store.SipTrunks, "sip_trunk", &store.Resource{Name: "this machine", Spec: trunk}, nil},
		{store.PhoneNumbers, "phone_number", &store.Resource{Name: DemoNumber, ProjectID: &project, Spec: []byte("{}")}, &project},
	} {
		_, err := a.DB().Resources(r.kind).Create(tctx, r.row)
		if errors.Is(err, store.ErrAlreadyExists) {
			continue // taken (another tenant's number): the demo goes without
		}
		if err != nil {
			return fmt.Errorf("demo %s: %w", r.obj, err)
		}
		if err := a.Grants().ResourceCreated(tctx, r.obj, r.row.ID, t.ID, r.project); err != nil {
			return fmt.Errorf("demo %s grants: %w", r.obj, err)
		}
	}
	return nil
}

func (c *Credentials) print(out io.Writer, base string) {
	fmt.Fprintf(out, "\nDemo tenant %q (id %s)\n", c.Tenant.Slug, c.Tenant.ID)
	fmt.Fprintf(out, "  API key (admin, realtime, billing):\n    export AVB_API_KEY=%s\n", c.APIKey)
	if c.AdminToken != "" {
		fmt.Fprintf(out, "  tenant admin token (12 h):\n    export AVB_TOKEN=%s\n", c.AdminToken)
		fmt.Fprintf(out, "  platform sysadmin token (12 h):\n    export AVB_SYSADMIN_TOKEN=%s\n", c.SysToken)
	}
	fmt.Fprintf(out, "  try:\n")
	fmt.Fprintf(out, "    curl -s -H \"X-API-Key: $AVB_API_KEY\" -H 'Content-Type: application/json' -d '{}' %s/avb.v1.TenantService/GetTenant\n", base)
	fmt.Fprintf(out, "    curl -s -H \"Authorization: Bearer $AVB_TOKEN\" -H 'Content-Type: application/json' -d '{}' %s/avb.v1.UserService/GetMe\n", base)
}
