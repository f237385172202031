package billing

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/billing/lago"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

// Provisioner keeps a tenant's Lago customer and subscription where the
// tenant stands: a customer per tenant, a subscription on its tier's plan,
// terminated once the tenant is deleted. It reads the tenant afresh each
// time, so running it again, late or twice, converges.
type Provisioner struct {
	DB   *store.DB
	Lago *lago.Client
	// Plans maps each tier to its Lago plan code.
	Plans map[string]string
}

// Apply brings the tenant's Lago customer and subscription up to date and
// records what Lago confirmed (audited as a billing_event).
func (p *Provisioner) Apply(ctx context.Context, tenantID uuid.UUID) error {
	t, err := p.DB.Tenants().Get(ctx, tenantID)
	if err != nil {
		return err
	}
	ctx = tenancy.With(ctx, tenantID)
	acct, err := p.DB.BillingAccount(ctx)
	if err != nil {
		return err
	}
	if t.Status == store.StatusDeleted {
		if acct.SubscriptionStatus != "active" {
			return nil
		}
		if err := p.Lago.TerminateSubscription(ctx, SubscriptionID(tenantID)); err != nil {
			return err
		}
		return p.record(ctx, acct, acct.PlanCode, "terminated", "subscription terminated: the tenant was deleted")
	}
	plan := p.Plans[t.Tier]
	if plan == "" {
		return fmt.Errorf("no Lago plan is configured for tier %q (AVB_LAGO_PLANS)", t.Tier)
	}
	email, err := p.DB.BillingContact(ctx)
	if err != nil {
		return err
	}
	if _, err := p.Lago.UpsertCustomer(ctx, lago.Customer{ExternalID: tenantID.String(), Name: t.Name, Email: email, Currency: Currency,
		Metadata: []lago.Metadata{{Key: "slug", Value: t.Slug}, {Key: "tier", Value: t.Tier}}}); err != nil {
		return err
	}
	if acct.SubscriptionStatus == "active" && acct.PlanCode == plan {
		return nil
	}
	// Lago upgrades or downgrades a subscription posted again under the
	// same external id with another plan.
	if _, err := p.Lago.CreateSubscription(ctx, lago.Subscription{ExternalID: SubscriptionID(tenantID),
		ExternalCustomerID: tenantID.String(), PlanCode: plan, Name: t.Name}); err != nil {
		return err
	}
	return p.record(ctx, acct, plan, "active", "subscription on plan "+plan)
}

// record stores the account's new state, with a system audit entry.
func (p *Provisioner) record(ctx context.Context, was *store.BillingAccount, plan, status, what string) error {
	ctx, _ = store.WithAudit(ctx, store.AuditEntry{ActorType: "system", Action: "billing_event", ResourceType: "tenant",
		ResourceID: tenancyID(ctx), Description: what,
		OldValues: store.AuditValues(map[string]any{"plan_code": was.PlanCode, "subscription_status": was.SubscriptionStatus}),
		NewValues: store.AuditValues(map[string]any{"plan_code": plan, "subscription_status": status})})
	return p.DB.SetBillingSubscription(ctx, plan, status)
}

func tenancyID(ctx context.Context) string {
	id, _ := tenancy.ID(ctx)
	return id.String()
}
