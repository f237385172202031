package server

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// defaultRotationGrace is how long a rotated key keeps working by default.
const defaultRotationGrace = 24 * time.Hour

// NewAPIKeyServer returns the ApiKeyService handler.
func NewAPIKeyServer(deps Identity) avbv1connect.ApiKeyServiceHandler { return &apiKeyServer{deps} }

type apiKeyServer struct{ Identity }

func (s *apiKeyServer) CreateApiKey(ctx context.Context, req *connect.Request[avbv1.CreateApiKeyRequest]) (*connect.Response[avbv1.CreateApiKeyResponse], error) {
	m := req.Msg
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.DB.Tenants().Get(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	var expires *time.Time
	if m.GetExpireTime() != nil {
		e := m.GetExpireTime().AsTime()
		expires = &e
	}
	if err := checkKeyLifetime(settingsFromJSON(t.Settings).GetSecurity(), expires); err != nil {
		return nil, err
	}
	secret, prefix, hash := authn.NewAPIKey()
	k := &store.APIKey{Name: m.GetName(), Description: m.GetDescription(), Prefix: prefix, Hash: hash,
		RateLimitTier: rateTierWord(m.GetRateLimitTier()), ExpiresAt: expires, CreatedBy: creator(ctx)}
	for _, sc := range m.GetScopes() {
		k.Scopes = append(k.Scopes, scopeWord(sc))
	}
	if err := s.DB.APIKeys().Create(ctx, k); err != nil {
		return nil, err
	}
	if err := s.Grants.KeyCreated(ctx, k); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreateApiKeyResponse{ApiKey: apiKeyToProto(k), Secret: secret}), nil
}

// checkKeyLifetime applies the tenant's security settings to a new key.
func checkKeyLifetime(sec *avbv1.SecuritySettings, expires *time.Time) error {
	if expires == nil {
		if sec.GetRequireApiKeyExpiry() || sec.GetApiKeyMaxTtlDays() > 0 {
			return invalidArgument("expire_time: this tenant requires API keys to expire")
		}
		return nil
	}
	if max := sec.GetApiKeyMaxTtlDays(); max > 0 && time.Until(*expires) > time.Duration(max)*24*time.Hour {
		return invalidArgument("expire_time: beyond this tenant's maximum key lifetime")
	}
	return nil
}

// creator is the user creating a key, if the caller is a user.
func creator(ctx context.Context) *uuid.UUID {
	p := authn.PrincipalFrom(ctx)
	if p == nil || p.Kind != authn.KindUser || p.UserID == uuid.Nil {
		return nil
	}
	id := p.UserID
	return &id
}

func (s *apiKeyServer) ListApiKeys(ctx context.Context, req *connect.Request[avbv1.ListApiKeysRequest]) (*connect.Response[avbv1.ListApiKeysResponse], error) {
	rows, next, err := s.DB.APIKeys().List(ctx, req.Msg.GetIncludeRevoked(), store.PageSize(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListApiKeysResponse{NextPageToken: next}
	for i := range rows {
		res.ApiKeys = append(res.ApiKeys, apiKeyToProto(&rows[i]))
	}
	return connect.NewResponse(res), nil
}

func (s *apiKeyServer) GetApiKey(ctx context.Context, req *connect.Request[avbv1.GetApiKeyRequest]) (*connect.Response[avbv1.GetApiKeyResponse], error) {
	id, err := parseID(req.Msg.GetApiKeyId())
	if err != nil {
		return nil, err
	}
	k, err := s.DB.APIKeys().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetApiKeyResponse{ApiKey: apiKeyToProto(k)}), nil
}

func (s *apiKeyServer) RevokeApiKey(ctx context.Context, req *connect.Request[avbv1.RevokeApiKeyRequest]) (*connect.Response[avbv1.RevokeApiKeyResponse], error) {
	id, err := parseID(req.Msg.GetApiKeyId())
	if err != nil {
		return nil, err
	}
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.DB.APIKeys().Get(ctx, id); err != nil {
		return nil, err // not this tenant's key: touch nothing
	}
	if err := s.Grants.KeyRevoked(ctx, tenantID, id); err != nil {
		return nil, err
	}
	k, err := s.DB.APIKeys().Revoke(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.Keys.Invalidate(ctx, k.Hash); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.RevokeApiKeyResponse{ApiKey: apiKeyToProto(k)}), nil
}

func (s *apiKeyServer) RotateApiKey(ctx context.Context, req *connect.Request[avbv1.RotateApiKeyRequest]) (*connect.Response[avbv1.RotateApiKeyResponse], error) {
	id, err := parseID(req.Msg.GetApiKeyId())
	if err != nil {
		return nil, err
	}
	grace := defaultRotationGrace
	if req.Msg.GetGracePeriod() != nil {
		grace = req.Msg.GetGracePeriod().AsDuration()
	}
	secret, prefix, hash := authn.NewAPIKey()
	next := &store.APIKey{Prefix: prefix, Hash: hash, CreatedBy: creator(ctx)}
	old, err := s.DB.APIKeys().Rotate(ctx, id, grace, next)
	if err == store.ErrKeyNotRotatable {
		return nil, apierror.New(connect.CodeFailedPrecondition, avbv1.ErrorReason_ERROR_REASON_CONFLICT, err.Error())
	}
	if err != nil {
		return nil, err
	}
	if err := s.Grants.KeyCreated(ctx, next); err != nil {
		return nil, err
	}
	if err := s.Keys.Invalidate(ctx, old.Hash); err != nil { // its expiry moved
		return nil, err
	}
	return connect.NewResponse(&avbv1.RotateApiKeyResponse{ApiKey: apiKeyToProto(next), Secret: secret, Previous: apiKeyToProto(old)}), nil
}
