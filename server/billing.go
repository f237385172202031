package server

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lago"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewBillingServer returns the BillingService handler; now is the clock.
// With a Lago client, ListInvoices first refreshes the newest invoices
// from Lago (within a short deadline; the stored ones otherwise).
func NewBillingServer(db *store.DB, now func() time.Time, lagoClient *lago.Client, log *slog.Logger) avbv1connect.BillingServiceHandler {
	return &billingServer{db: db, now: now, lago: lagoClient, log: log}
}

type billingServer struct {
	db   *store.DB
	now  func() time.Time
	lago *lago.Client
	log  *slog.Logger
}

// invoiceRefreshTimeout bounds ListInvoices' wait on Lago.
const invoiceRefreshTimeout = 3 * time.Second

func (s *billingServer) GetUsage(ctx context.Context, req *connect.Request[avbv1.GetUsageRequest]) (*connect.Response[avbv1.GetUsageResponse], error) {
	start, end := billing.Month(s.now())
	if req.Msg.GetStartTime() != nil {
		start, end = req.Msg.GetStartTime().AsTime(), req.Msg.GetEndTime().AsTime()
	}
	totals, err := s.db.UsageTotals(ctx, start, end)
	if err != nil {
		return nil, err
	}
	res := &avbv1.GetUsageResponse{Usage: usageToProto(start, end, totals)}
	if end.Sub(start) <= maxDailyUsage {
		byDay, err := s.db.UsageByDay(ctx, start, end)
		if err != nil {
			return nil, err
		}
		last := end
		if now := s.now(); now.Before(last) {
			last = now
		}
		for day := start.UTC().Truncate(24 * time.Hour); day.Before(last); day = day.Add(24 * time.Hour) {
			res.Days = append(res.Days, usageToProto(day, day.Add(24*time.Hour), byDay[day]))
		}
	}
	return connect.NewResponse(res), nil
}

// maxDailyUsage is the longest period GetUsage breaks down by day.
const maxDailyUsage = 92 * 24 * time.Hour

func usageToProto(start, end time.Time, totals map[string]float64) *avbv1.Usage {
	u := billing.FromLedger(totals)
	return &avbv1.Usage{
		StartTime: ts(start), EndTime: ts(end), Sessions: int64(u.Sessions),
		AudioInputMinutes: u.AudioInMinutes, AudioOutputMinutes: u.AudioOutMinutes,
		InputTokens: int64(u.InputTokens), OutputTokens: int64(u.OutputTokens), ApiCalls: int64(u.APICalls),
		PhoneMinutes: u.PhoneMinutes,
	}
}

func money(minor int64) *avbv1.Money {
	return &avbv1.Money{Currency: billing.Currency, AmountMinor: minor}
}

func (s *billingServer) GetProjectedCost(ctx context.Context, _ *connect.Request[avbv1.GetProjectedCostRequest]) (*connect.Response[avbv1.GetProjectedCostResponse], error) {
	tenantID, err := callerTenant(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.db.Tenants().Get(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	now := s.now()
	start, _ := billing.Month(now)
	totals, err := s.db.UsageTotals(ctx, start, now)
	if err != nil {
		return nil, err
	}
	p := billing.Prices[t.Tier].Project(billing.FromLedger(totals), now)
	res := &avbv1.GetProjectedCostResponse{PeriodStartTime: ts(p.Start), PeriodEndTime: ts(p.End), Tier: t.Tier,
		ToDate: money(p.ToDate), Projected: money(p.Projected)}
	for _, l := range p.Lines {
		res.ToDateLines = append(res.ToDateLines, &avbv1.CostLine{Item: l.Item, Quantity: l.Quantity, UnitPriceMinor: l.UnitPrice, Amount: money(l.Amount)})
	}
	return connect.NewResponse(res), nil
}

func (s *billingServer) ListInvoices(ctx context.Context, req *connect.Request[avbv1.ListInvoicesRequest]) (*connect.Response[avbv1.ListInvoicesResponse], error) {
	if s.lago != nil && req.Msg.GetPageToken() == "" {
		rctx, cancel := context.WithTimeout(ctx, invoiceRefreshTimeout)
		err := billing.RefreshInvoices(rctx, s.db, s.lago, store.PageSize(req.Msg.GetPageSize()))
		cancel()
		if err != nil && s.log != nil {
			s.log.WarnContext(ctx, "invoices not refreshed from Lago; listing those stored", "error", err.Error())
		}
	}
	rows, next, err := s.db.Invoices(ctx, store.PageSize(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListInvoicesResponse{NextPageToken: next}
	for _, inv := range rows {
		res.Invoices = append(res.Invoices, &avbv1.Invoice{Id: inv.ID.String(), Number: inv.Number,
			Status:    avbv1.InvoiceStatus(enumValue(avbv1.InvoiceStatus_value, "INVOICE_STATUS_", inv.Status)),
			IssueTime: ts(inv.IssuedAt), Total: &avbv1.Money{Currency: inv.Currency, AmountMinor: inv.TotalMinor}, FileUrl: inv.FileURL})
	}
	return connect.NewResponse(res), nil
}
