package authn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/platform/logging"
	"github.com/agentvoicebox/avb/server/middleware"
	"github.com/agentvoicebox/avb/store"
)

// TopicTokenSession carries the session keys ended by a logout: every
// instance forgets what it knew of them and reads them again.
const TopicTokenSession = "token_session"

// BackchannelLogoutPath is where the identity provider posts logout tokens
// (OpenID Connect Back-Channel Logout 1.0).
const BackchannelLogoutPath = "/oidc/backchannel-logout"

// backchannelLogoutEvent is the event a logout token carries.
const backchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// sessionKey names a token's session: its sid, or (a token without one)
// the token's own hash, so each such token is a session of its own.
func sessionKey(sid, token string) string {
	if sid != "" {
		return sid
	}
	sum := sha256.Sum256([]byte(token))
	return "tok:" + hex.EncodeToString(sum[:16])
}

// TokenSessions records users' logins and refuses tokens whose session the
// identity provider ended. What it knows of a session is cached for
// CacheTTL on each instance, and forgotten on every instance at a logout.
type TokenSessions struct {
	DB    *store.DB
	Cache *invalidation.Cache[bool] // session key -> logged out
	Bus   *invalidation.Bus
	Log   *slog.Logger
}

// Check records the login of p's token session on its first request in
// the tenant, and refuses a session that was logged out.
func (s *TokenSessions) Check(ctx context.Context, p *Principal, h http.Header) error {
	// A session is one user's, in the tenant of that user.
	loggedOut, err := s.Cache.Fetch(p.TokenSession, func() (bool, error) {
		id := p.UserID
		entry := store.AuditEntry{ActorType: "user", ActorID: &id, ActorEmail: p.Email, Action: "login",
			ResourceType: "user", ResourceID: p.UserID.String(), Description: "signed in",
			IPAddress: middleware.ClientIP(ctx), UserAgent: h.Get("User-Agent"), RequestID: logging.RequestID(ctx)}
		if !strings.HasPrefix(p.TokenSession, "tok:") {
			entry.NewValues = store.AuditValues(map[string]any{"session": p.TokenSession})
		}
		actx, _ := store.WithAudit(ctx, entry)
		return s.DB.TokenSessions().Seen(actx, p.TokenSession, p.UserID, p.Subject, p.TokenExpiry)
	})
	if err != nil {
		return fmt.Errorf("token session: %w", err)
	}
	if loggedOut {
		return ErrLoggedOut
	}
	return nil
}

// BackchannelLogout serves the identity provider's logout tokens: a valid
// one ends its session (logout recorded in the audit log, the session's
// tokens refused on every instance from then on).
func (s *TokenSessions) BackchannelLogout(o *OIDC) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST a logout_token", http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			logoutError(w, "invalid_request", "the body is not a form")
			return
		}
		sid, sub, err := o.VerifyLogout(r.Context(), r.PostForm.Get("logout_token"))
		if err != nil {
			if errors.Is(err, ErrIssuerUnavailable) {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			logoutError(w, "invalid_request", err.Error())
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		keys, err := s.DB.TokenSessions().Logout(ctx, sid, sub)
		if err != nil {
			s.Log.ErrorContext(ctx, "back-channel logout not recorded", "error", err.Error())
			w.WriteHeader(http.StatusServiceUnavailable) // the provider retries
			return
		}
		for _, k := range keys {
			// Each instance forgets the session; one that misses the message
			// reads it again within the cache's lifetime.
			s.Cache.Forget(k)
			if s.Bus != nil {
				if err := s.Bus.Publish(ctx, TopicTokenSession, k); err != nil {
					s.Log.WarnContext(ctx, "logout not broadcast; other instances see it within their cache lifetime", "error", err.Error())
				}
			}
		}
		w.WriteHeader(http.StatusOK)
	})
}

func logoutError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// logoutClaims are a logout token's claims beyond the standard ones.
type logoutClaims struct {
	Subject   string                     `json:"sub"`
	SessionID string                     `json:"sid"`
	Events    map[string]json.RawMessage `json:"events"`
	Nonce     *string                    `json:"nonce"`
}

// VerifyLogout checks a logout token (signature, issuer, audience, expiry,
// the back-channel logout event, no nonce, a sid or sub) and returns its
// session and subject.
func (o *OIDC) VerifyLogout(ctx context.Context, raw string) (sid, sub string, err error) {
	if raw == "" {
		return "", "", errors.New("logout_token is required")
	}
	v, err := o.getVerifier(ctx)
	if err != nil {
		return "", "", err
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return "", "", fmt.Errorf("logout token: %v", err)
	}
	var c logoutClaims
	if err := tok.Claims(&c); err != nil {
		return "", "", fmt.Errorf("logout token claims: %v", err)
	}
	if _, ok := c.Events[backchannelLogoutEvent]; !ok {
		return "", "", errors.New("logout token without the back-channel logout event")
	}
	if c.Nonce != nil {
		return "", "", errors.New("a logout token must not carry a nonce")
	}
	if c.SessionID == "" && c.Subject == "" {
		return "", "", errors.New("logout token names neither a session (sid) nor a subject (sub)")
	}
	return c.SessionID, c.Subject, nil
}
