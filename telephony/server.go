package telephony

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
)

// Route is where a dialed number leads: a tenant's project, persona and
// voice config, and the trunks that may call it.
type Route struct {
	TenantID      uuid.UUID
	Number        string
	ProjectID     string
	PersonaID     string
	VoiceConfigID string
	Trunks        []Trunk
}

// ErrUnknownNumber: no tenant owns the dialed number (SIP 404).
var ErrUnknownNumber = errors.New("no such number")

// Routes finds the route of a dialed number (E.164).
type Routes interface {
	Route(ctx context.Context, number string) (*Route, error)
}

// Call is what the SIP side knows of a call when it asks the engine to
// take it.
type Call struct {
	Route  *Route
	From   string // the caller's number or URI
	Trunk  string // the trunk it came through
	Codec  Codec
	CallID string // the SIP Call-ID
}

// Leg is the phone side of a call as the engine sees it.
type Leg interface {
	// Frames is the caller's audio, 20 ms of the call's codec at a time.
	Frames() <-chan []byte
	Digits() <-chan rune
	// Play queues the agent's audio (the call's codec); Flush drops what
	// is queued (barge-in).
	Play([]byte)
	Flush()
	Stats() Stats
	// Done is closed when the phone side ended (a BYE, or its media).
	Done() <-chan struct{}
	// Queued is the agent's audio not sent yet.
	Queued() time.Duration
	// Transfer asks the far end to take the caller to target (a number
	// or a SIP URI) with a SIP REFER; nil once it accepted.
	Transfer(ctx context.Context, target string) error
}

// ErrNoTransfer: the far end refused to transfer the call.
var ErrNoTransfer = errors.New("the far end did not accept the transfer")

// callLeg is a call's media with the dialog that can move it.
type callLeg struct {
	*Session
	dialog interface {
		Do(ctx context.Context, req *sip.Request) (*sip.Response, error)
	}
	contact sip.Uri // the far end's
}

// Transfer sends a REFER in the call's dialog (RFC 3515).
func (l callLeg) Transfer(ctx context.Context, target string) error {
	refer := target
	if !strings.HasPrefix(target, "sip:") && !strings.HasPrefix(target, "sips:") {
		refer = (&sip.Uri{Scheme: "sip", User: target, Host: l.contact.Host, Port: l.contact.Port}).String()
	}
	req := sip.NewRequest(sip.REFER, l.contact)
	req.AppendHeader(sip.NewHeader("Refer-To", "<"+refer+">"))
	res, err := l.dialog.Do(ctx, req)
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%w: %d %s", ErrNoTransfer, res.StatusCode, res.Reason)
	}
	return nil
}

// Conversation is a call the engine admitted.
type Conversation interface {
	SessionID() string
	// Run bridges the leg to the agent until the call ends; it returns
	// when the caller hung up (nil) or the agent or platform ended it.
	Run(ctx context.Context, leg Leg) error
	// Fail ends, as an error with reason, a call that never got its media
	// (not answered, no media port).
	Fail(reason string)
}

// Engine takes calls: Open admits one (a busy tenant gets ErrBusy), or
// fails it.
type Engine interface {
	Open(ctx context.Context, c Call) (Conversation, error)
}

// Errors an engine gives for calls it cannot take.
var (
	ErrBusy        = errors.New("the tenant is at its call limit") // 486
	ErrUnavailable = errors.New("calls cannot be taken now")       // 503
)

// Limiter bounds how often one source may send requests (floods).
type Limiter interface {
	Allow(ctx context.Context, key string) bool
}

// Config is the SIP endpoint's configuration.
type Config struct {
	// Listen is the address SIP listens on, UDP and TCP ("0.0.0.0:5060").
	Listen string
	// Host is the address avb gives in Contact and SDP (reachable by the
	// trunk); the listen address when it is specific.
	Host string
	// RTPPorts is the UDP port range of the media [first, last].
	RTPPorts [2]int
	// Realm and NonceKey make digest challenges.
	Realm    string
	NonceKey []byte
	// TLSListen, with TLS, serves SIP over TLS too (trunks that encrypt
	// their signalling).
	TLSListen string
	TLS       *tls.Config
}

// Server is avb's SIP endpoint.
type Server struct {
	cfg    Config
	routes Routes
	engine Engine
	limit  Limiter
	log    *slog.Logger
	nonces Nonces

	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	client  *sipgo.Client
	dialogs *sipgo.DialogServerCache
	placed  *sipgo.DialogClientCache // the calls avb places
	host    netip.Addr
	port    int
	tlsAddr netip.AddrPort // SIP over TLS, when it listens

	// Outcome, when set, counts each call: "answered", or the SIP status
	// that refused it.
	Outcome func(direction, outcome string)

	mu    sync.Mutex
	calls map[string]*inbound // by SIP Call-ID
	wg    sync.WaitGroup
}

type inbound struct {
	dialog *sipgo.DialogServerSession
	media  *Session
	answer []byte
}

// NewServer makes the SIP endpoint; Serve runs it.
func NewServer(cfg Config, routes Routes, engine Engine, limit Limiter, log *slog.Logger) (*Server, error) {
	if cfg.Realm == "" {
		cfg.Realm = "avb"
	}
	if cfg.RTPPorts[0] <= 0 || cfg.RTPPorts[1] < cfg.RTPPorts[0] {
		return nil, fmt.Errorf("telephony: RTP port range %d-%d", cfg.RTPPorts[0], cfg.RTPPorts[1])
	}
	s := &Server{cfg: cfg, routes: routes, engine: engine, limit: limit, log: log,
		nonces: Nonces{Key: cfg.NonceKey, Realm: cfg.Realm}, calls: map[string]*inbound{}}
	return s, nil
}

// Listen binds the SIP address (UDP and TCP on the same port) and serves
// until ctx ends. ready is called with the bound address.
func (s *Server) Listen(ctx context.Context, ready func(addr netip.AddrPort)) error {
	udp, tcp, addr, err := listenBoth(s.cfg.Listen)
	if err != nil {
		return err
	}
	s.port = int(addr.Port())
	s.host = addr.Addr()
	if s.cfg.Host != "" {
		if h, err := netip.ParseAddr(s.cfg.Host); err == nil {
			s.host = h
		}
	}
	if s.host.IsUnspecified() {
		s.host = outboundAddr()
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("avb"), sipgo.WithUserAgentHostname(s.host.String()),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(s.log)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(s.log)))
	if err != nil {
		return err
	}
	s.ua = ua
	if s.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(s.log)); err != nil {
		return err
	}
	if s.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname(s.host.String()), sipgo.WithClientLogger(s.log)); err != nil {
		return err
	}
	contact := sip.ContactHeader{Address: sip.Uri{Host: s.host.String(), Port: s.port}}
	s.dialogs = sipgo.NewDialogServerCache(s.client, contact)
	s.placed = sipgo.NewDialogClientCache(s.client, contact)
	s.srv.OnInvite(s.onInvite)
	s.srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = s.dialogs.ReadAck(req, tx) })
	s.srv.OnBye(s.onBye)
	s.srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"))
		_ = tx.Respond(res)
	})
	go func() { _ = s.srv.ServeUDP(udp) }()
	go func() { _ = s.srv.ServeTCP(tcp) }()
	if s.cfg.TLSListen != "" && s.cfg.TLS != nil {
		tl, err := tls.Listen("tcp", s.cfg.TLSListen, s.cfg.TLS)
		if err != nil {
			_ = udp.Close()
			_ = tcp.Close()
			return fmt.Errorf("telephony: listen tls %s: %w", s.cfg.TLSListen, err)
		}
		s.tlsAddr = netip.MustParseAddrPort(tl.Addr().String())
		defer tl.Close()
		go func() { _ = s.srv.ServeTLS(tl) }()
	}
	if ready != nil {
		ready(netip.AddrPortFrom(s.host, uint16(s.port)))
	}
	<-ctx.Done()
	s.hangUpAll()
	_ = udp.Close()
	_ = tcp.Close()
	s.wg.Wait()
	return ua.Close()
}

// listenBoth binds UDP and TCP on one port. With port 0 it looks for a
// port free in both (the one UDP is given may be taken for TCP).
func listenBoth(addr string) (net.PacketConn, net.Listener, netip.AddrPort, error) {
	_, port, _ := net.SplitHostPort(addr)
	tries := 1
	if port == "0" {
		tries = 20
	}
	var err error
	for range tries {
		var udp net.PacketConn
		if udp, err = net.ListenPacket("udp", addr); err != nil {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("telephony: listen udp %s: %w", addr, err)
		}
		bound := netip.MustParseAddrPort(udp.LocalAddr().String())
		tcp, terr := net.Listen("tcp", bound.String())
		if terr == nil {
			return udp, tcp, bound, nil
		}
		_ = udp.Close()
		err = fmt.Errorf("telephony: listen tcp %s: %w", bound, terr)
	}
	return nil, nil, netip.AddrPort{}, err
}

// TLSAddr is where SIP over TLS listens (invalid: it does not).
func (s *Server) TLSAddr() netip.AddrPort { return s.tlsAddr }

// outboundAddr is the machine's address towards the outside (for a
// wildcard listen address), or loopback.
func outboundAddr() netip.Addr {
	c, err := net.Dial("udp", "192.0.2.1:9") // no packet is sent
	if err != nil {
		return netip.MustParseAddr("127.0.0.1")
	}
	defer c.Close()
	a, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return a.Addr()
}

func (s *Server) outcome(o string) {
	if s.Outcome != nil {
		s.Outcome("inbound", o)
	}
}

// refuse answers an INVITE with a final error status.
func (s *Server) refuse(tx sip.ServerTransaction, req *sip.Request, code int, reason string, headers ...sip.Header) {
	s.outcome(strconv.Itoa(code))
	respond(tx, req, code, reason, headers...)
}

func respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, headers ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range headers {
		res.AppendHeader(h)
	}
	_ = tx.Respond(res)
}

// Number is the E.164 number a request URI or To header dials ("+15550100"),
// or "" when it names none.
func Number(user string) string {
	user = strings.TrimSpace(user)
	if i := strings.IndexAny(user, ";?"); i >= 0 {
		user = user[:i]
	}
	digits := strings.TrimPrefix(user, "+")
	if len(digits) < 3 || len(digits) > 15 {
		return ""
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return ""
		}
	}
	return "+" + digits
}

// sourceAddr is the address a request came from.
func sourceAddr(req *sip.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

func (s *Server) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params != nil {
		if _, inDialog := to.Params.Get("tag"); inDialog {
			s.reinvite(req, tx)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := sourceAddr(req)
	if s.limit != nil && !s.limit.Allow(ctx, "sip:"+src.String()) {
		s.refuse(tx, req, sip.StatusServiceUnavailable, "Too Many Requests", sip.NewHeader("Retry-After", "5"))
		return
	}
	number := Number(req.Recipient.User)
	if number == "" && req.To() != nil {
		number = Number(req.To().Address.User)
	}
	if number == "" {
		s.refuse(tx, req, sip.StatusNotFound, "Not Found")
		return
	}
	route, err := s.routes.Route(ctx, number)
	if errors.Is(err, ErrUnknownNumber) {
		s.refuse(tx, req, sip.StatusNotFound, "Not Found")
		return
	}
	if err != nil {
		s.log.WarnContext(ctx, "sip: routing failed", "number", number, "error", err.Error())
		s.refuse(tx, req, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
		return
	}
	trunk, ok := s.authenticate(req, tx, src, route)
	if !ok {
		return
	}
	peer, err := ParseOffer(req.Body())
	if err != nil {
		s.refuse(tx, req, sip.StatusNotAcceptableHere, "Not Acceptable Here")
		return
	}
	dialog, err := s.dialogs.ReadInvite(req, tx)
	if err != nil {
		s.refuse(tx, req, sip.StatusBadRequest, "Bad Request")
		return
	}
	_ = dialog.Respond(sip.StatusTrying, "Trying", nil)
	from := ""
	if f := req.From(); f != nil {
		from = f.Address.User
	}
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	// The call lives until a side hangs up, beyond this request's bound:
	// what Open starts runs on callCtx (its own calls to the database and
	// Redis have their deadlines).
	callCtx, end := context.WithCancel(context.Background())
	conv, err := s.engine.Open(callCtx, Call{Route: route, From: from, Trunk: trunk, Codec: peer.Codec, CallID: callID})
	switch {
	case errors.Is(err, ErrBusy):
		end()
		s.outcome("486")
		_ = dialog.Respond(sip.StatusBusyHere, "Busy Here", nil)
		return
	case err != nil:
		end()
		s.log.WarnContext(ctx, "sip: call not taken", "number", number, "error", err.Error())
		s.outcome("503")
		_ = dialog.Respond(sip.StatusServiceUnavailable, "Service Unavailable", nil, sip.NewHeader("Retry-After", "5"))
		return
	}
	conn, err := ListenRTP(s.host, s.cfg.RTPPorts)
	if err != nil {
		s.log.WarnContext(ctx, "sip: no media port", "error", err.Error())
		_ = dialog.Respond(sip.StatusServiceUnavailable, "Service Unavailable", nil)
		end()
		conv.Fail("no media port free")
		return
	}
	media := NewSession(callCtx, conn, peer)
	local := netip.MustParseAddrPort(conn.LocalAddr().String())
	answer := Describe(netip.AddrPortFrom(s.host, local.Port()), rand.Uint64()>>1, &peer)
	if err := dialog.RespondSDP(answer); err != nil {
		end()
		media.Close()
		conv.Fail("the answer could not be sent")
		return
	}
	s.outcome("answered")
	s.mu.Lock()
	s.calls[callID] = &inbound{dialog: dialog, media: media, answer: answer}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer end()
		// The phone side ends with a BYE or CANCEL (the dialog's
		// context), or with its media.
		go func() {
			select {
			case <-dialog.Context().Done():
			case <-media.Done():
			case <-callCtx.Done():
			}
			media.Close()
		}()
		contact := req.From().Address
		if c := req.Contact(); c != nil {
			contact = c.Address
		}
		err := conv.Run(callCtx, callLeg{Session: media, dialog: dialog, contact: contact})
		media.Close()
		s.mu.Lock()
		delete(s.calls, callID)
		s.mu.Unlock()
		if dialog.LoadState() < sip.DialogStateEnded {
			// The agent (or the platform) ended the call: hang up.
			bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = dialog.Bye(bctx)
			cancel()
		}
		_ = dialog.Close()
		if err != nil {
			s.log.Info("sip: call ended", "session_id", conv.SessionID(), "reason", err.Error())
		}
	}()
}

// authenticate admits a request from a trunk of the route: by its source
// address, or by digest credentials (challenged with 401 first). It
// answers the request itself when it refuses.
func (s *Server) authenticate(req *sip.Request, tx sip.ServerTransaction, src netip.Addr, route *Route) (string, bool) {
	if t := FromSource(src, route.Trunks); t != nil {
		return t.Name, true
	}
	h := req.GetHeader("Authorization")
	if h == nil {
		h = req.GetHeader("Proxy-Authorization")
	}
	if h == nil {
		s.refuse(tx, req, sip.StatusUnauthorized, "Unauthorized", sip.NewHeader("WWW-Authenticate", s.nonces.Challenge()))
		return "", false
	}
	t, err := s.nonces.Verify(h.Value(), string(req.Method), route.Trunks)
	switch {
	case errors.Is(err, ErrStaleNonce):
		s.refuse(tx, req, sip.StatusUnauthorized, "Unauthorized", sip.NewHeader("WWW-Authenticate", s.nonces.Challenge()))
		return "", false
	case err != nil:
		s.refuse(tx, req, sip.StatusForbidden, "Forbidden")
		return "", false
	}
	return t.Name, true
}

// reinvite answers an INVITE within a call: hold, resume or new media.
func (s *Server) reinvite(req *sip.Request, tx sip.ServerTransaction) {
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	s.mu.Lock()
	c := s.calls[callID]
	s.mu.Unlock()
	if c == nil {
		respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		return
	}
	if len(req.Body()) > 0 {
		peer, err := ParseOffer(req.Body())
		if err != nil {
			respond(tx, req, sip.StatusNotAcceptableHere, "Not Acceptable Here")
			return
		}
		c.media.Update(peer)
	}
	_ = tx.Respond(sip.NewSDPResponseFromRequest(req, c.answer))
}

func (s *Server) onBye(req *sip.Request, tx sip.ServerTransaction) {
	if err := s.dialogs.ReadBye(req, tx); err == nil {
		return
	}
	// The far end of a call avb placed hangs up.
	if err := s.placed.ReadBye(req, tx); err != nil {
		respond(tx, req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
	}
}

// hangUpAll ends every call (the server stops).
func (s *Server) hangUpAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		c.media.Close()
	}
}

// ListenRTP binds a UDP port for a call's media in ports (an even one, as
// RTP asks), trying random ones.
func ListenRTP(host netip.Addr, ports [2]int) (*net.UDPConn, error) {
	span := (ports[1] - ports[0]) / 2
	for range 50 {
		p := ports[0] + 2*rand.IntN(span+1)
		if p%2 == 1 {
			p--
		}
		if p < ports[0] {
			p += 2
		}
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, uint16(p))))
		if err == nil {
			return conn, nil
		}
	}
	return nil, fmt.Errorf("telephony: no free RTP port in %s-%s", strconv.Itoa(ports[0]), strconv.Itoa(ports[1]))
}
