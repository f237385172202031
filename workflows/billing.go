package workflows

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/agentvoicebox/avb/billing"
	"github.com/agentvoicebox/avb/billing/lago"
)

// Billing holds the activities of the billing queue. Without Lago
// configured (nil Syncer and Provisioner) they do nothing.
type Billing struct {
	Syncer      *billing.Syncer
	Provisioner *billing.Provisioner
	// Plans maps tiers to Lago plan codes (for finding accounts out of date).
	Plans map[string]string
	Log   *slog.Logger
}

// SyncUsage sends every tenant's unsent ledger rows to Lago and returns
// how many events Lago accepted.
func (b *Billing) SyncUsage(ctx context.Context) (int, error) {
	if b.Syncer == nil {
		return 0, nil
	}
	rep, err := b.Syncer.SyncAll(ctx)
	return rep.Sent, err
}

// ReconcileAccounts provisions every tenant whose Lago customer or
// subscription is behind (a start that never reached Temporal, a tier
// changed by hand) and returns how many it brought up to date.
func (b *Billing) ReconcileAccounts(ctx context.Context) (int, error) {
	if b.Provisioner == nil {
		return 0, nil
	}
	ids, err := b.Provisioner.DB.TenantsBillingOutOfDate(ctx, b.Plans)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if err := b.Provisioner.Apply(ctx, id); err != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			if b.Log != nil {
				b.Log.Warn("billing account not provisioned; the next run retries", "tenant_id", id.String(), "error", err.Error())
			}
			continue
		}
		n++
	}
	return n, nil
}

// ProvisionTenant brings one tenant's Lago customer and subscription up
// to date. Lago's refusals (4xx) are not retried: the next reconcile tries
// again once the configuration is fixed.
func (b *Billing) ProvisionTenant(ctx context.Context, tenantID string) error {
	if b.Provisioner == nil {
		return nil
	}
	id, err := uuid.Parse(tenantID)
	if err != nil {
		return temporal.NewNonRetryableApplicationError("bad tenant id", "bad_tenant", err)
	}
	err = b.Provisioner.Apply(ctx, id)
	var apiErr *lago.APIError
	if errors.As(err, &apiErr) && !apiErr.Temporary() {
		return temporal.NewNonRetryableApplicationError(apiErr.Error(), "lago_refused", nil)
	}
	return err
}

// SyncBillingUsage brings billing accounts up to date, then sends the
// tenants' usage to Lago; it returns how many events Lago accepted.
func SyncBillingUsage(ctx workflow.Context) (int, error) {
	var b *Billing
	if _, err := maintenance(ctx, b.ReconcileAccounts); err != nil {
		workflow.GetLogger(ctx).Warn("billing reconcile failed", "error", err)
	}
	return maintenance(ctx, b.SyncUsage)
}

// SignalBillingChanged is the signal that a tenant's billing may be behind.
const SignalBillingChanged = "billing-changed"

// ProvisionBilling keeps one tenant's Lago customer and subscription up to
// date: it runs the provisioning, and again for each change signalled
// while it ran. Lago outages are retried for a day; the reconcile of
// sync_billing_usage picks up anything left.
func ProvisionBilling(ctx workflow.Context, tenantID string) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    2 * time.Minute,
		ScheduleToCloseTimeout: 24 * time.Hour,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 5 * time.Minute},
	})
	changed := workflow.GetSignalChannel(ctx, SignalBillingChanged)
	var b *Billing
	for {
		for changed.ReceiveAsync(nil) { // changes so far are all covered by this run
		}
		if err := workflow.ExecuteActivity(ctx, b.ProvisionTenant, tenantID).Get(ctx, nil); err != nil {
			return err
		}
		if !changed.ReceiveAsync(nil) {
			return nil
		}
	}
}

// BillingChanged starts (or signals) the tenant's ProvisionBilling
// workflow on the billing queue.
func BillingChanged(ctx context.Context, c client.Client, q Queues, tenantID string) error {
	_, err := c.SignalWithStartWorkflow(ctx, "billing-provision-"+tenantID, SignalBillingChanged, nil,
		client.StartWorkflowOptions{TaskQueue: q.Name(QueueBilling)}, ProvisionBilling, tenantID)
	return err
}
