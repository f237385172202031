// Package keycloak holds the realm export compose loads into Keycloak. The
// test keeps it issuing the claims the API verifies.
package keycloak

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
)

func TestRealmIssuesTheClaimsTheAPIReads(t *testing.T) {
	b, err := os.ReadFile("realm-avb.json")
	if err != nil {
		t.Fatal(err)
	}
	var realm struct {
		Realm string `json:"realm"`
		Roles struct {
			Realm []struct{ Name string } `json:"realm"`
		} `json:"roles"`
		ClientScopes []struct {
			Name            string `json:"name"`
			ProtocolMappers []struct {
				ProtocolMapper string            `json:"protocolMapper"`
				Config         map[string]string `json:"config"`
			} `json:"protocolMappers"`
		} `json:"clientScopes"`
		Clients []struct {
			ClientID            string   `json:"clientId"`
			DefaultClientScopes []string `json:"defaultClientScopes"`
		} `json:"clients"`
	}
	if err := json.Unmarshal(b, &realm); err != nil {
		t.Fatal(err)
	}
	if realm.Realm != "avb" {
		t.Fatalf("realm %q", realm.Realm)
	}
	var roles []string
	for _, r := range realm.Roles.Realm {
		roles = append(roles, r.Name)
	}
	for _, want := range []string{"sysadmin", "admin", "developer", "operator", "viewer", "billing"} {
		if !slices.Contains(roles, want) {
			t.Errorf("realm role %s missing", want)
		}
	}
	var tenantClaim, audience bool
	for _, s := range realm.ClientScopes {
		for _, m := range s.ProtocolMappers {
			tenantClaim = tenantClaim || (m.Config["claim.name"] == "tenant_id" && m.Config["access.token.claim"] == "true")
			audience = audience || (m.ProtocolMapper == "oidc-audience-mapper" && m.Config["included.client.audience"] == "avb-api")
		}
	}
	if !tenantClaim || !audience {
		t.Fatalf("access tokens lack tenant_id (%v) or the avb-api audience (%v)", tenantClaim, audience)
	}
}
