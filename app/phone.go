package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/ratelimit"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/telephony"
)

// phone makes the SIP endpoint: calls to the tenants' numbers become
// sessions on voice (the VoiceService handler, so they are live calls like
// any other).
func (a *App) phone(cfg *config.Config, identity server.Identity, voice avbv1connect.VoiceServiceHandler) (*telephony.Server, error) {
	ports, err := portRange(cfg.SIP.RTPPorts)
	if err != nil {
		return nil, fmt.Errorf("AVB_SIP_RTP_PORTS: %w", err)
	}
	// Every instance checks the others' digest challenges: the nonce key
	// comes from a secret they share.
	m := hmac.New(sha256.New, []byte(a.secrets.ClientToken.Get()))
	m.Write([]byte("avb sip nonces"))
	sc := telephony.Config{Listen: cfg.SIP.Addr, Host: cfg.SIP.Host, RTPPorts: ports, Realm: server.SIPRealm, NonceKey: m.Sum(nil)}
	if cfg.SIP.TLSAddr != "" {
		if cfg.SIP.TLSCert == "" || cfg.SIP.TLSKey == "" {
			return nil, fmt.Errorf("AVB_SIP_TLS_ADDR needs AVB_SIP_TLS_CERT_FILE and AVB_SIP_TLS_KEY_FILE")
		}
		cert, err := tls.LoadX509KeyPair(cfg.SIP.TLSCert, cfg.SIP.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("SIP over TLS: %w", err)
		}
		sc.TLSListen, sc.TLS = cfg.SIP.TLSAddr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var limit telephony.Limiter
	if cfg.SIP.Rate > 0 {
		limit = sipLimit{a.limiter, ratelimit.Limit{Rate: cfg.SIP.Rate, Period: time.Second}}
	}
	s, err := telephony.NewServer(sc, server.PhoneRoutes(a.db, identity.Tenants), server.PhoneEngine(voice), limit, a.log)
	if err != nil {
		return nil, err
	}
	s.Outcome = func(direction, outcome string) { a.Metrics.PhoneCalls.WithLabelValues(direction, outcome).Inc() }
	return s, nil
}

// portRange reads "first-last".
func portRange(s string) ([2]int, error) {
	lo, hi, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(strings.TrimSpace(lo))
	last, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil || first < 1024 || last > 65535 || last-first < 1 {
		return [2]int{}, fmt.Errorf("%q is not a port range such as 10000-20000", s)
	}
	return [2]int{first, last}, nil
}

// sipLimit bounds the calls one source may start, in the shared limiter.
type sipLimit struct {
	l   *ratelimit.Limiter
	lim ratelimit.Limit
}

func (s sipLimit) Allow(ctx context.Context, key string) bool {
	return s.l.Allow(ctx, key, s.lim).Allowed
}
