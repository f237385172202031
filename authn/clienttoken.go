package authn

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/platform/secret"
)

// ClientTokenPrefix starts every browser client token.
const ClientTokenPrefix = "avbct_"

// ClientTokens mints and verifies short-lived browser tokens: an HMAC-signed
// claim set naming the tenant, the API key or user that minted it, an
// optional session and an expiry. They grant the realtime scope only.
type ClientTokens struct {
	key *secret.Value
	now func() time.Time
}

// NewClientTokens returns a minter/verifier with an HMAC key. Tokens are
// minted with the key's current value and verified with any value it
// holds as valid, so a rotated key still verifies the tokens minted before
// for its grace period.
func NewClientTokens(key *secret.Value) *ClientTokens {
	return &ClientTokens{key: key, now: time.Now}
}

// ClientClaims are what a client token says.
type ClientClaims struct {
	Tenant  uuid.UUID  `json:"t"`
	APIKey  *uuid.UUID `json:"k,omitempty"`
	User    *uuid.UUID `json:"u,omitempty"`
	Session *uuid.UUID `json:"s,omitempty"`
	Expiry  int64      `json:"exp"`
}

// ErrInvalidClientToken: malformed, badly signed or expired.
var ErrInvalidClientToken = errors.New("invalid or expired client token")

func sign(key, payload string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Mint returns a token for claims.
func (c *ClientTokens) Mint(cl ClientClaims) (string, error) {
	b, err := json.Marshal(cl)
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(b)
	return ClientTokenPrefix + payload + "." + sign(c.key.Get(), payload), nil
}

// Verify checks a token and returns its claims.
func (c *ClientTokens) Verify(tok string) (*ClientClaims, error) {
	body, ok := strings.CutPrefix(tok, ClientTokenPrefix)
	if !ok {
		return nil, ErrInvalidClientToken
	}
	payload, sig, ok := strings.Cut(body, ".")
	if !ok || !slices.ContainsFunc(c.key.Valid(), func(k string) bool { return hmac.Equal([]byte(sig), []byte(sign(k, payload))) }) {
		return nil, ErrInvalidClientToken
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, ErrInvalidClientToken
	}
	var cl ClientClaims
	if err := json.Unmarshal(b, &cl); err != nil || cl.Tenant == uuid.Nil || c.now().Unix() >= cl.Expiry {
		return nil, ErrInvalidClientToken
	}
	return &cl, nil
}
