package tools

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/agentvoicebox/avb/platform/egress"
	"github.com/agentvoicebox/avb/platform/signature"
)

// MaxResponse bounds a webhook's answer (bytes); a longer one is an error.
const MaxResponse = 64 << 10

// WebhookCall is one call of a webhook tool, the body avb POSTs:
//
//	{"type":"tool_call","session_id":"…","call_id":"…","name":"book_meeting","arguments":{…}}
//
// signed in the Avb-Signature header (see package signature), with the
// call id as Idempotency-Key. A 2xx answer's body (at most 64 KiB, JSON or
// text) is the result the model gets; any other status is a failed call.
type WebhookCall struct {
	Type      string          `json:"type"`
	SessionID string          `json:"session_id"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

// Webhooks calls webhook tools through an egress guard.
type Webhooks struct {
	// Client dials only public addresses (egress.Guard.Client); its own
	// timeout is the longest any tool may have, each call has its own.
	Client *http.Client
	// Guard checks URLs before anything is dialed.
	Guard        *egress.Guard
	RequireHTTPS bool
	// Backoff is the wait before each retry of an idempotent tool
	// (default 100 ms, then 300 ms).
	Backoff []time.Duration
}

// NewWebhooks returns a webhook caller dialing through g, trusting roots
// (nil: the system's certificate authorities).
func NewWebhooks(g *egress.Guard, requireHTTPS bool, roots *x509.CertPool) *Webhooks {
	c := g.Client(2*time.Minute, requireHTTPS)
	if roots != nil {
		c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &Webhooks{Client: c, Guard: g, RequireHTTPS: requireHTTPS}
}

// errRetryable marks a failure worth another attempt.
type errRetryable struct{ error }

func (e errRetryable) Unwrap() error { return e.error }

// Call POSTs call to t.URL signed with each of secrets (the current one,
// and a rotated one during its grace period), within ctx (which carries
// the tool's deadline), and returns the answer. An idempotent tool is
// tried again after a network failure, a 429 or a 5xx, while time is left.
func (w *Webhooks) Call(ctx context.Context, t Tool, secrets []string, call WebhookCall) (string, error) {
	if len(secrets) == 0 || secrets[0] == "" {
		return "", errors.New("the tenant has no webhook_signing_secret: create one (TenantService.RotateTenantSecret) before using webhook tools")
	}
	if _, err := w.Guard.CheckURL(t.URL, w.RequireHTTPS); err != nil {
		return "", err
	}
	call.Type, call.Name = "tool_call", t.Name
	if len(call.Arguments) == 0 {
		call.Arguments = json.RawMessage("{}")
	}
	body, err := json.Marshal(call)
	if err != nil {
		return "", err
	}
	backoff := w.Backoff
	if backoff == nil {
		backoff = []time.Duration{100 * time.Millisecond, 300 * time.Millisecond}
	}
	for attempt := 0; ; attempt++ {
		out, err := w.post(ctx, t.URL, secrets, call.CallID, body)
		var re errRetryable
		if err == nil || !t.Idempotent || attempt >= len(backoff) || !errors.As(err, &re) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(backoff[attempt]):
		}
	}
}

func (w *Webhooks) post(ctx context.Context, url string, secrets []string, callID string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "avb-tools/1")
	req.Header.Set("Idempotency-Key", callID)
	// Signed per attempt: a retry carries a fresh timestamp.
	req.Header.Set(signature.Header, signature.Sign(body, time.Now(), secrets...))
	res, err := w.Client.Do(req)
	if err != nil {
		if errors.Is(err, egress.ErrRefused) || ctx.Err() != nil {
			return "", err
		}
		return "", errRetryable{fmt.Errorf("tool server unreachable: %w", err)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, MaxResponse+1))
	if err != nil {
		return "", errRetryable{fmt.Errorf("reading the tool's answer: %w", err)}
	}
	switch {
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return "", errRetryable{fmt.Errorf("the tool's server answered %d", res.StatusCode)}
	case res.StatusCode < 200 || res.StatusCode > 299:
		return "", fmt.Errorf("the tool's server answered %d: %s", res.StatusCode, Truncate(strings.TrimSpace(string(b)), 200))
	case len(b) > MaxResponse:
		return "", fmt.Errorf("the tool's answer is larger than %d bytes", MaxResponse)
	}
	return strings.TrimSpace(string(b)), nil
}
