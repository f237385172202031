package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/policy"
)

// PlatformID is the id of the one platform object.
const PlatformID = "avb"

// Platform is the platform object.
var Platform = Object{Type: "platform", ID: PlatformID}

// SubjectOf is the SpiceDB subject a principal checks as: its user row or
// its API key.
func SubjectOf(p *authn.Principal) Object {
	if p.Kind == authn.KindAPIKey || (p.Kind == authn.KindClientToken && p.APIKeyID != uuid.Nil) {
		return Object{Type: "api_key", ID: p.APIKeyID.String()}
	}
	return Object{Type: "user", ID: p.UserID.String()}
}

// sysadminSubject names a sysadmin independently of any tenant's user row:
// a digest of the identity provider's subject.
func sysadminSubject(p *authn.Principal) Object {
	sum := sha256.Sum256([]byte(p.Subject))
	return Object{Type: "user", ID: "sub-" + hex.EncodeToString(sum[:16])}
}

// SpiceDB is the Decider that asks SpiceDB. Any error fails closed.
//
// Decisions are cached per (tenant ZedToken, subject, resource, permission).
// Every authorization write to a tenant records a new ZedToken on the tenant
// and invalidates the tenant everywhere, so the next request carries the new
// token and misses the cache: a cached decision is exactly as fresh as a
// SpiceDB check at that token would be. Entries also expire after decisionTTL.
type SpiceDB struct {
	C *Client

	// sysadmins remembers the subjects whose platform#sysadmin relationship
	// this process has written, with the ZedToken of that write.
	sysadmins sync.Map

	mu        sync.Mutex
	decisions map[string]decision
}

type decision struct {
	allowed bool
	at      time.Time
}

const (
	decisionTTL      = 30 * time.Second
	maxDecisionCache = 100_000
)

// Allowed implements Decider.
func (s *SpiceDB) Allowed(ctx context.Context, p *authn.Principal, rule policy.Rule, resourceID string) (bool, error) {
	if p.IsSysadmin() {
		ok, err := s.sysadmin(ctx, p)
		if err != nil || ok {
			return ok, err
		}
	}
	if rule.ResourceType == "platform" {
		return false, nil
	}
	id := resourceID
	if rule.ResourceType == "tenant" {
		id = p.TenantID.String()
	}
	if id == "" {
		return false, nil
	}
	resource, sub := Object{Type: rule.ResourceType, ID: id}, SubjectOf(p)
	if p.AuthzToken == "" { // no write recorded yet: ask, fully consistent
		return s.C.Check(ctx, resource, rule.Permission, sub, "")
	}
	key := p.AuthzToken + "|" + sub.Type + ":" + sub.ID + "|" + resource.Type + ":" + resource.ID + "#" + rule.Permission
	s.mu.Lock()
	d, ok := s.decisions[key]
	s.mu.Unlock()
	if ok && time.Since(d.at) < decisionTTL {
		return d.allowed, nil
	}
	allowed, err := s.C.Check(ctx, resource, rule.Permission, sub, p.AuthzToken)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	if s.decisions == nil || len(s.decisions) >= maxDecisionCache {
		s.decisions = map[string]decision{}
	}
	s.decisions[key] = decision{allowed: allowed, at: time.Now()}
	s.mu.Unlock()
	return allowed, nil
}

// sysadmin mirrors the identity provider's sysadmin role into SpiceDB (once
// per process and subject) and checks it there. The role must be in the
// token too: removing it at the identity provider ends the access at once.
func (s *SpiceDB) sysadmin(ctx context.Context, p *authn.Principal) (bool, error) {
	sub := sysadminSubject(p)
	token, known := s.sysadmins.Load(sub.ID)
	if !known {
		t, err := s.C.Write(ctx, []Relationship{{Resource: Platform, Relation: "sysadmin", Subject: sub}}, nil)
		if err != nil {
			return false, err
		}
		s.sysadmins.Store(sub.ID, t)
		token = t
	}
	return s.C.Check(ctx, Platform, "manage", sub, token.(string))
}
