package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/authn"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/telephony"
	"github.com/agentvoicebox/avb/tenancy"
)

// SIPRealm is the digest realm of avb's SIP endpoint: trunk passwords are
// kept as HA1 in it, so it never changes.
const SIPRealm = "avb"

// NewPhoneNumberServer returns the PhoneNumberService handler.
func NewPhoneNumberServer(deps Identity) avbv1connect.PhoneNumberServiceHandler {
	return &phoneNumberServer{named[*avbv1.PhoneNumber]{Identity: deps, kind: store.PhoneNumbers, objType: "phone_number",
		field: "phone_number", new: func() *avbv1.PhoneNumber { return &avbv1.PhoneNumber{} }}}
}

type phoneNumberServer struct{ named[*avbv1.PhoneNumber] }

func (s *phoneNumberServer) CreatePhoneNumber(ctx context.Context, req *connect.Request[avbv1.CreatePhoneNumberRequest]) (*connect.Response[avbv1.CreatePhoneNumberResponse], error) {
	p, err := s.create(ctx, req.Msg.GetRequestId(), req.Msg.GetPhoneNumber())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreatePhoneNumberResponse{PhoneNumber: p}), nil
}

func (s *phoneNumberServer) GetPhoneNumber(ctx context.Context, req *connect.Request[avbv1.GetPhoneNumberRequest]) (*connect.Response[avbv1.GetPhoneNumberResponse], error) {
	p, err := s.get(ctx, req.Msg.GetPhoneNumberId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetPhoneNumberResponse{PhoneNumber: p}), nil
}

func (s *phoneNumberServer) ListPhoneNumbers(ctx context.Context, req *connect.Request[avbv1.ListPhoneNumbersRequest]) (*connect.Response[avbv1.ListPhoneNumbersResponse], error) {
	m := req.Msg
	items, next, err := s.list(ctx, listParams{pageSize: m.GetPageSize(), pageToken: m.GetPageToken(), nameContains: m.GetNameContains(), order: m.GetOrderBy()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.ListPhoneNumbersResponse{PhoneNumbers: items, NextPageToken: next}), nil
}

func (s *phoneNumberServer) UpdatePhoneNumber(ctx context.Context, req *connect.Request[avbv1.UpdatePhoneNumberRequest]) (*connect.Response[avbv1.UpdatePhoneNumberResponse], error) {
	p, err := s.update(ctx, req.Msg.GetPhoneNumberId(), req.Msg.GetPhoneNumber(), req.Msg.GetUpdateMask())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdatePhoneNumberResponse{PhoneNumber: p}), nil
}

func (s *phoneNumberServer) DeletePhoneNumber(ctx context.Context, req *connect.Request[avbv1.DeletePhoneNumberRequest]) (*connect.Response[avbv1.DeletePhoneNumberResponse], error) {
	if err := s.delete(ctx, req.Msg.GetPhoneNumberId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeletePhoneNumberResponse{}), nil
}

// NewSipTrunkServer returns the SipTrunkService handler.
func NewSipTrunkServer(deps Identity) avbv1connect.SipTrunkServiceHandler {
	return &sipTrunkServer{named[*avbv1.SipTrunk]{Identity: deps, kind: store.SipTrunks, objType: "sip_trunk",
		field: "sip_trunk", new: func() *avbv1.SipTrunk { return &avbv1.SipTrunk{} }, check: sealTrunk}}
}

type sipTrunkServer struct{ named[*avbv1.SipTrunk] }

// digestPrefix marks a stored trunk password: "md5:<HA1>:<username>" (the
// HA1 holds for that username only).
const digestPrefix = "md5:"

// sealTrunk checks a trunk and keeps its password only as a digest.
func sealTrunk(t *avbv1.SipTrunk) error {
	for i, src := range t.GetAllowedSources() {
		if _, err := parseSource(src); err != nil {
			return apierror.Field(fmt.Sprintf("sip_trunk.allowed_sources[%d]", i), "not an address or CIDR prefix")
		}
	}
	if t.GetPassword() != "" {
		if t.GetUsername() == "" {
			return apierror.Field("sip_trunk.username", "is required with a password")
		}
		t.PasswordHash = digestPrefix + telephony.HA1(t.GetUsername(), SIPRealm, t.GetPassword()) + ":" + t.GetUsername()
		t.Password = ""
	}
	if _, ok := trunkDigest(t); !ok {
		t.PasswordHash = ""
		if t.GetUsername() != "" {
			return apierror.Field("sip_trunk.password", "is required with a new username")
		}
	}
	t.PasswordSet = t.GetPasswordHash() != ""
	if a := t.GetOutboundAddress(); a != "" {
		if _, err := netip.ParseAddrPort(a); err != nil {
			return apierror.Field("sip_trunk.outbound_address", "not ip:port")
		}
	}
	if t.GetUsername() == "" && len(t.GetAllowedSources()) == 0 && t.GetOutboundAddress() == "" {
		return apierror.Field("sip_trunk.allowed_sources", "a trunk needs credentials (username and password), allowed sources or an outbound address")
	}
	return nil
}

// trunkDigest is the trunk's HA1 when its stored digest is for its
// username.
func trunkDigest(t *avbv1.SipTrunk) (string, bool) {
	rest, ok := strings.CutPrefix(t.GetPasswordHash(), digestPrefix)
	if !ok {
		return "", false
	}
	ha1, user, ok := strings.Cut(rest, ":")
	return ha1, ok && user == t.GetUsername() && len(ha1) == 32
}

func parseSource(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// shown is a trunk as the API returns it: never its password's digest.
func shown(t *avbv1.SipTrunk) *avbv1.SipTrunk {
	if t != nil {
		t.PasswordHash, t.Password = "", ""
	}
	return t
}

func (s *sipTrunkServer) CreateSipTrunk(ctx context.Context, req *connect.Request[avbv1.CreateSipTrunkRequest]) (*connect.Response[avbv1.CreateSipTrunkResponse], error) {
	t, err := s.create(ctx, req.Msg.GetRequestId(), req.Msg.GetSipTrunk())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.CreateSipTrunkResponse{SipTrunk: shown(t)}), nil
}

func (s *sipTrunkServer) GetSipTrunk(ctx context.Context, req *connect.Request[avbv1.GetSipTrunkRequest]) (*connect.Response[avbv1.GetSipTrunkResponse], error) {
	t, err := s.get(ctx, req.Msg.GetSipTrunkId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.GetSipTrunkResponse{SipTrunk: shown(t)}), nil
}

func (s *sipTrunkServer) ListSipTrunks(ctx context.Context, req *connect.Request[avbv1.ListSipTrunksRequest]) (*connect.Response[avbv1.ListSipTrunksResponse], error) {
	m := req.Msg
	items, next, err := s.list(ctx, listParams{pageSize: m.GetPageSize(), pageToken: m.GetPageToken(), nameContains: m.GetNameContains(), order: m.GetOrderBy()})
	if err != nil {
		return nil, err
	}
	for _, t := range items {
		shown(t)
	}
	return connect.NewResponse(&avbv1.ListSipTrunksResponse{SipTrunks: items, NextPageToken: next}), nil
}

func (s *sipTrunkServer) UpdateSipTrunk(ctx context.Context, req *connect.Request[avbv1.UpdateSipTrunkRequest]) (*connect.Response[avbv1.UpdateSipTrunkResponse], error) {
	// The stored digest is the server's: a client cannot set it.
	req.Msg.GetSipTrunk().PasswordHash = ""
	mask := req.Msg.GetUpdateMask()
	if mask != nil {
		paths := mask.GetPaths()[:0:0]
		for _, p := range mask.GetPaths() {
			if p != "password_hash" && p != "password_set" {
				paths = append(paths, p)
			}
		}
		// Without a new password, the stored digest stays.
		mask.Paths = paths
	} else if req.Msg.GetSipTrunk().GetPassword() == "" {
		return nil, apierror.Field("update_mask", "name the fields to change: without a password, every field would clear the stored one")
	}
	t, err := s.update(ctx, req.Msg.GetSipTrunkId(), req.Msg.GetSipTrunk(), mask)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.UpdateSipTrunkResponse{SipTrunk: shown(t)}), nil
}

func (s *sipTrunkServer) DeleteSipTrunk(ctx context.Context, req *connect.Request[avbv1.DeleteSipTrunkRequest]) (*connect.Response[avbv1.DeleteSipTrunkResponse], error) {
	if err := s.delete(ctx, req.Msg.GetSipTrunkId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&avbv1.DeleteSipTrunkResponse{}), nil
}

// PhoneRoutes finds where a dialed number leads, for the SIP endpoint.
func PhoneRoutes(db *store.DB, tenants *authn.Tenants) telephony.Routes {
	return phoneRoutes{db, tenants}
}

type phoneRoutes struct {
	db      *store.DB
	tenants *authn.Tenants
}

// maxTrunks bounds the trunks a tenant's call is checked against.
const maxTrunks = 100

func (r phoneRoutes) Route(ctx context.Context, number string) (*telephony.Route, error) {
	row, err := r.db.PhoneNumberRoute(ctx, number)
	if errors.Is(err, store.ErrNotFound) {
		return nil, telephony.ErrUnknownNumber
	}
	if err != nil {
		return nil, err
	}
	// A suspended (or deleted) tenant takes no calls.
	t, err := r.tenants.Lookup(ctx, row.TenantID.String())
	if errors.Is(err, authn.ErrTenantNotFound) {
		return nil, telephony.ErrUnknownNumber
	}
	if err != nil {
		return nil, err
	}
	if err := authn.Serving(t); err != nil {
		return nil, fmt.Errorf("%w: %v", telephony.ErrUnavailable, err)
	}
	var pn avbv1.PhoneNumber
	_ = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(orEmptyJSON(row.Spec), &pn)
	route := &telephony.Route{TenantID: row.TenantID, Number: number, PersonaID: pn.GetPersonaId(), VoiceConfigID: pn.GetVoiceConfigId()}
	if row.ProjectID != nil {
		route.ProjectID = row.ProjectID.String()
	}
	rows, _, err := r.db.Resources(store.SipTrunks).List(tenancy.With(ctx, row.TenantID), store.ResourceQuery{Size: maxTrunks})
	if err != nil {
		return nil, err
	}
	for _, tr := range rows {
		var st avbv1.SipTrunk
		_ = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(orEmptyJSON(tr.Spec), &st)
		trunk := telephony.Trunk{Name: tr.Name}
		if ha1, ok := trunkDigest(&st); ok {
			trunk.Username, trunk.HA1 = st.GetUsername(), ha1
		}
		for _, src := range st.GetAllowedSources() {
			if p, err := parseSource(src); err == nil {
				trunk.Sources = append(trunk.Sources, p)
			}
		}
		route.Trunks = append(route.Trunks, trunk)
	}
	return route, nil
}
