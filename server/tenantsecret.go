package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/store"
)

// Sealer encrypts a tenant's secrets for storage (Vault Transit, with the
// tenant id as the key derivation context). Its errors are the secret
// store not answering.
type Sealer interface {
	Encrypt(ctx context.Context, plain []byte, context string) (ciphertext string, keyVersion int, err error)
}

func tenantSecretToProto(s store.TenantSecret) *avbv1.TenantSecret {
	return &avbv1.TenantSecret{Name: s.Name, KeyVersion: int32(s.KeyVersion), UpdateTime: timestamppb.New(s.UpdatedAt)}
}

// SecretStoreUnavailable is the answer when Vault does not answer: only
// the calls that need a tenant secret fail.
func SecretStoreUnavailable() error {
	return apierror.New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_DEPENDENCY_UNAVAILABLE,
		"the secret store does not answer; try again shortly")
}

func (s *tenantServer) sealer() (Sealer, error) {
	if s.Sealer == nil {
		return nil, apierror.New(connect.CodeFailedPrecondition, avbv1.ErrorReason_ERROR_REASON_SECRET_STORE_NOT_CONFIGURED,
			"this server keeps no tenant secrets: it has no secret store (Vault Transit) configured")
	}
	return s.Sealer, nil
}

// seal encrypts a tenant's secret for storage; the secret store not
// answering is unavailable.
func (s *tenantServer) seal(ctx context.Context, sealer Sealer, tenantID uuid.UUID, value string) (string, int, error) {
	c, v, err := sealer.Encrypt(ctx, []byte(value), tenantID.String())
	if err != nil {
		if s.Log != nil {
			s.Log.WarnContext(ctx, "tenant secret not encrypted: the secret store does not answer", "error", err.Error())
		}
		return "", 0, SecretStoreUnavailable()
	}
	return c, v, nil
}

func (s *tenantServer) SetTenantSecret(ctx context.Context, req *connect.Request[avbv1.SetTenantSecretRequest]) (*connect.Response[avbv1.SetTenantSecretResponse], error) {
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	sealer, err := s.sealer()
	if err != nil {
		return nil, err
	}
	c, v, err := s.seal(ctx, sealer, tenantID, req.Msg.GetSecret())
	if err != nil {
		return nil, err
	}
	store.DescribeAudit(ctx, req.Msg.GetName(), "set tenant secret "+req.Msg.GetName(), nil,
		map[string]any{"name": req.Msg.GetName(), "key_version": v})
	row, err := s.DB.TenantSecrets().Put(ctx, req.Msg.GetName(), c, v)
	if err != nil {
		return nil, err
	}
	s.publish(ctx, "tenant_secret.set", map[string]any{"name": row.Name})
	return connect.NewResponse(&avbv1.SetTenantSecretResponse{Secret: tenantSecretToProto(*row)}), nil
}

func (s *tenantServer) ListTenantSecrets(ctx context.Context, _ *connect.Request[avbv1.ListTenantSecretsRequest]) (*connect.Response[avbv1.ListTenantSecretsResponse], error) {
	rows, err := s.DB.TenantSecrets().List(ctx)
	if err != nil {
		return nil, err
	}
	out := &avbv1.ListTenantSecretsResponse{}
	for _, r := range rows {
		out.Secrets = append(out.Secrets, tenantSecretToProto(r))
	}
	return connect.NewResponse(out), nil
}

func (s *tenantServer) DeleteTenantSecret(ctx context.Context, req *connect.Request[avbv1.DeleteTenantSecretRequest]) (*connect.Response[avbv1.DeleteTenantSecretResponse], error) {
	store.DescribeAudit(ctx, req.Msg.GetName(), "deleted tenant secret "+req.Msg.GetName(), map[string]any{"name": req.Msg.GetName()}, nil)
	err := s.DB.TenantSecrets().Delete(ctx, req.Msg.GetName())
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierror.New(connect.CodeNotFound, avbv1.ErrorReason_ERROR_REASON_NOT_FOUND, "the tenant has no such secret")
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeleteTenantSecretResponse{}), nil
}

// WebhookSecretGrace is how long a rotated webhook signing secret goes on
// signing next to its successor.
const WebhookSecretGrace = 24 * time.Hour

func (s *tenantServer) RotateTenantSecret(ctx context.Context, req *connect.Request[avbv1.RotateTenantSecretRequest]) (*connect.Response[avbv1.RotateTenantSecretResponse], error) {
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	sealer, err := s.sealer()
	if err != nil {
		return nil, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	value := "whsec_" + base64.RawURLEncoding.EncodeToString(raw[:])
	c, v, err := s.seal(ctx, sealer, tenantID, value)
	if err != nil {
		return nil, err
	}
	name := req.Msg.GetName()
	_, hadOne := s.DB.TenantSecrets().Get(ctx, name)
	store.DescribeAudit(ctx, name, "rotated tenant secret "+name, nil, map[string]any{"name": name, "key_version": v})
	row, err := s.DB.TenantSecrets().Rotate(ctx, name, c, v)
	if err != nil {
		return nil, err
	}
	s.publish(ctx, "tenant_secret.rotated", map[string]any{"name": row.Name})
	out := &avbv1.RotateTenantSecretResponse{Secret: tenantSecretToProto(*row), Value: value}
	if hadOne == nil {
		out.PreviousExpireTime = timestamppb.New(row.UpdatedAt.Add(WebhookSecretGrace))
	}
	return connect.NewResponse(out), nil
}
