package server

import (
	"encoding/json"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/store"
)

// enumWord spells an enum value the way the database stores it:
// TENANT_TIER_PRO -> "pro".
func enumWord(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

// enumValue finds the value of an enum whose word is w, or 0.
func enumValue(values map[string]int32, prefix, w string) int32 {
	return values[prefix+strings.ToUpper(w)]
}

func tierWord(t avbv1.TenantTier) string {
	if t == avbv1.TenantTier_TENANT_TIER_UNSPECIFIED {
		return ""
	}
	return enumWord(t.String(), "TENANT_TIER_")
}

func statusWord(s avbv1.TenantStatus) string {
	if s == avbv1.TenantStatus_TENANT_STATUS_UNSPECIFIED {
		return ""
	}
	return enumWord(s.String(), "TENANT_STATUS_")
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tsp(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func settingsFromJSON(raw json.RawMessage) *avbv1.TenantSettings {
	s := &avbv1.TenantSettings{}
	_ = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(raw, s)
	return s
}

func tenantToProto(t *store.Tenant) *avbv1.Tenant {
	return &avbv1.Tenant{
		Id:        t.ID.String(),
		Name:      t.Name,
		Slug:      t.Slug,
		Tier:      avbv1.TenantTier(enumValue(avbv1.TenantTier_value, "TENANT_TIER_", t.Tier)),
		Status:    avbv1.TenantStatus(enumValue(avbv1.TenantStatus_value, "TENANT_STATUS_", t.Status)),
		BillingId: t.BillingID,
		Settings:  settingsFromJSON(t.Settings),
		Limits: &avbv1.TenantLimits{
			MaxUsers: int32(t.MaxUsers), MaxProjects: int32(t.MaxProjects),
			MaxApiKeys: int32(t.MaxAPIKeys), MaxSessionsPerMonth: int32(t.MaxSessionsPerMonth),
		},
		CreateTime: ts(t.CreatedAt),
		UpdateTime: ts(t.UpdatedAt),
	}
}

func userToProto(u *store.User) *avbv1.User {
	prefs := &structpb.Struct{}
	_ = protojson.Unmarshal(u.Preferences, prefs)
	return &avbv1.User{
		Id: u.ID.String(), TenantId: u.TenantID.String(), Subject: u.Subject, Email: u.Email,
		FirstName: u.FirstName, LastName: u.LastName, IsActive: u.IsActive, Roles: u.Roles,
		Preferences: prefs, CreateTime: ts(u.CreatedAt), LastLoginTime: ts(u.LastLoginAt),
	}
}

func scopeWord(s avbv1.ApiKeyScope) string { return enumWord(s.String(), "API_KEY_SCOPE_") }

func rateTierWord(t avbv1.RateLimitTier) string {
	if t == avbv1.RateLimitTier_RATE_LIMIT_TIER_UNSPECIFIED {
		return "standard"
	}
	return enumWord(t.String(), "RATE_LIMIT_TIER_")
}

func apiKeyToProto(k *store.APIKey) *avbv1.ApiKey {
	out := &avbv1.ApiKey{
		Id: k.ID.String(), TenantId: k.TenantID.String(), Name: k.Name, Description: k.Description,
		Prefix: k.Prefix, ExpireTime: tsp(k.ExpiresAt), RevokeTime: tsp(k.RevokedAt),
		LastUsedTime: tsp(k.LastUsedAt), LastUsedIp: k.LastUsedIP, UsageCount: k.UsageCount,
		CreateTime:    ts(k.CreatedAt),
		RateLimitTier: avbv1.RateLimitTier(enumValue(avbv1.RateLimitTier_value, "RATE_LIMIT_TIER_", k.RateLimitTier)),
	}
	for _, s := range k.Scopes {
		out.Scopes = append(out.Scopes, avbv1.ApiKeyScope(enumValue(avbv1.ApiKeyScope_value, "API_KEY_SCOPE_", s)))
	}
	if k.CreatedBy != nil {
		out.CreatedBy = k.CreatedBy.String()
	}
	if k.ReplacedBy != nil {
		out.ReplacedById = k.ReplacedBy.String()
	}
	return out
}
