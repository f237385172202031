package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"

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
	if p.Kind == authn.KindAPIKey {
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
type SpiceDB struct {
	C *Client

	// sysadmins remembers the subjects whose platform#sysadmin relationship
	// this process has written, with the ZedToken of that write.
	sysadmins sync.Map
}

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
	return s.C.Check(ctx, Object{Type: rule.ResourceType, ID: id}, rule.Permission, SubjectOf(p), p.AuthzToken)
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
