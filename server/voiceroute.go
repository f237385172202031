package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/server/middleware"
	"github.com/agentvoicebox/avb/tenancy"
)

// The browser path across instances: ConverseEvents holds a call on one
// instance, and its SendAudio and SendControl requests may reach any. An
// instance that does not hold the call looks up the holder in the call's
// slot (its address) and forwards the request there, once: a forwarded
// request is never forwarded again. The holder authenticates and
// authorizes the forwarded request itself, from the caller's own
// credentials.

// forwardedHeader marks a request one instance forwarded to another.
const forwardedHeader = "Avb-Forwarded"

// forwardTimeout bounds one forwarded request.
const forwardTimeout = 2 * time.Second

// forwardHeaders are the caller's headers a forwarded request carries.
var forwardHeaders = []string{"Authorization", "X-API-Key", "X-Tenant-ID", middleware.RequestIDHeader}

// errNotHere: the session has no call on this instance.
var errNotHere = apierror.New(connect.CodeFailedPrecondition, avbv1.ErrorReason_ERROR_REASON_SESSION_NOT_LIVE,
	"the session is not live: open ConverseEvents first")

// peers are the voice clients of other instances, by address.
type peers struct {
	http    *http.Client
	clients sync.Map // address -> avbv1connect.VoiceServiceClient
}

func newPeers() *peers {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true) // instances speak h2c without TLS
	return &peers{http: &http.Client{Transport: &http.Transport{
		Protocols:           &protocols,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 2 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}}}
}

func (p *peers) client(address string) avbv1connect.VoiceServiceClient {
	if c, ok := p.clients.Load(address); ok {
		return c.(avbv1connect.VoiceServiceClient)
	}
	c, _ := p.clients.LoadOrStore(address, avbv1connect.NewVoiceServiceClient(p.http, address))
	return c.(avbv1connect.VoiceServiceClient)
}

// holderAddress is the instance holding a session's call, when it is
// another instance this one may forward to ("" otherwise).
func (s *voiceServer) holderAddress(ctx context.Context, header http.Header, sessionID string) string {
	if s.Limiter == nil || s.peers == nil || header.Get(forwardedHeader) != "" {
		return ""
	}
	tenantID, ok := tenancy.ID(ctx)
	if !ok {
		return ""
	}
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	holder, err := s.Limiter.Holder(lctx, tenantID.String(), sessionID)
	if err != nil {
		s.Log.WarnContext(ctx, "find a call's instance", "session_id", sessionID, "error", err.Error())
		return ""
	}
	addr, _, _ := strings.Cut(holder, holderSep)
	if addr == "" || addr == s.address() {
		return ""
	}
	return addr
}

// forward sends a browser-path request to the instance holding its call.
func forward[Req, Res any](ctx context.Context, s *voiceServer, req *connect.Request[Req], sessionID string,
	call func(avbv1connect.VoiceServiceClient) func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error),
) (*connect.Response[Res], error) {
	addr := s.holderAddress(ctx, req.Header(), sessionID)
	if addr == "" {
		return nil, errNotHere
	}
	out := connect.NewRequest(req.Msg)
	for _, h := range forwardHeaders {
		if v := req.Header().Get(h); v != "" {
			out.Header().Set(h, v)
		}
	}
	out.Header().Set(forwardedHeader, "1")
	// The forwarding instance is the holder's proxy: the holder believes
	// these when this instance is within its AVB_TRUSTED_PROXIES, so it
	// sees the caller's address, and that the caller came over https (this
	// instance redirected it otherwise).
	out.Header().Set("X-Forwarded-For", middleware.ClientIP(ctx))
	out.Header().Set("X-Forwarded-Proto", "https")
	fctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	start := time.Now()
	res, err := call(s.peers.client(addr))(fctx, out)
	if s.Metrics != nil {
		s.Metrics.ForwardDuration.Observe(time.Since(start).Seconds())
	}
	if err == nil {
		return connect.NewResponse(res.Msg), nil
	}
	// The holder's own answer (a wire error) goes back as it is; a holder
	// that failed to answer at all (refused, reset, hung: an error of the
	// transport, whatever code it maps to) is unavailable.
	if ce := new(connect.Error); errors.As(err, &ce) && connect.IsWireError(ce) && ce.Code() != connect.CodeUnavailable {
		return nil, err
	}
	s.Log.WarnContext(ctx, "forward to the call's instance", "session_id", sessionID, "instance", addr, "error", err.Error())
	return nil, apierror.New(connect.CodeUnavailable, avbv1.ErrorReason_ERROR_REASON_SESSION_NOT_LIVE,
		"the instance holding the call does not answer; retry, or rejoin the session")
}
