package lago

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Metadata is a key-value pair Lago keeps on a customer.
type Metadata struct {
	Key              string `json:"key"`
	Value            string `json:"value"`
	DisplayInInvoice bool   `json:"display_in_invoice"`
}

// Customer is a Lago customer; avb's tenant is its external id.
type Customer struct {
	LagoID     string     `json:"lago_id,omitempty"`
	ExternalID string     `json:"external_id"`
	Name       string     `json:"name,omitempty"`
	Email      string     `json:"email,omitempty"`
	Currency   string     `json:"currency,omitempty"`
	Metadata   []Metadata `json:"metadata,omitempty"`
}

// UpsertCustomer creates the customer, or updates the one with its
// external id.
func (c *Client) UpsertCustomer(ctx context.Context, in Customer) (*Customer, error) {
	var out struct {
		Customer Customer `json:"customer"`
	}
	if err := c.do(ctx, "POST", "/customers", nil, map[string]any{"customer": in}, &out); err != nil {
		return nil, err
	}
	return &out.Customer, nil
}

// Subscription puts a customer on a plan.
type Subscription struct {
	LagoID             string `json:"lago_id,omitempty"`
	ExternalID         string `json:"external_id"`
	ExternalCustomerID string `json:"external_customer_id"`
	PlanCode           string `json:"plan_code"`
	Name               string `json:"name,omitempty"`
	// BillingTime is "calendar" (the default) or "anniversary".
	BillingTime string `json:"billing_time,omitempty"`
	// Status: active, pending, terminated, canceled (answers only).
	Status string `json:"status,omitempty"`
}

// CreateSubscription puts the customer on the plan. With the external id
// of an existing subscription it changes that subscription's plan.
func (c *Client) CreateSubscription(ctx context.Context, in Subscription) (*Subscription, error) {
	in.Status = ""
	var out struct {
		Subscription Subscription `json:"subscription"`
	}
	if err := c.do(ctx, "POST", "/subscriptions", nil, map[string]any{"subscription": in}, &out); err != nil {
		return nil, err
	}
	return &out.Subscription, nil
}

// TerminateSubscription ends a subscription. Ending one Lago does not know
// (already gone) is not an error.
func (c *Client) TerminateSubscription(ctx context.Context, externalID string) error {
	err := c.do(ctx, "DELETE", "/subscriptions/"+url.PathEscape(externalID), nil, nil, nil)
	if IsNotFound(err) {
		return nil
	}
	return err
}

// Event is one usage measurement. TransactionID makes it count once,
// however often it is sent.
type Event struct {
	TransactionID          string         `json:"transaction_id"`
	ExternalSubscriptionID string         `json:"external_subscription_id"`
	Code                   string         `json:"code"`
	Timestamp              int64          `json:"timestamp"` // Unix seconds
	Properties             map[string]any `json:"properties,omitempty"`
}

// SendEvents sends up to MaxBatch events in one call. Lago deduplicates by
// transaction id, so a batch that may have arrived is safe to send again.
func (c *Client) SendEvents(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	if len(events) > MaxBatch {
		return fmt.Errorf("lago: a batch holds at most %d events, not %d", MaxBatch, len(events))
	}
	return c.do(ctx, "POST", "/events/batch", nil, map[string]any{"events": events}, nil)
}

// Invoice is an invoice Lago issued.
type Invoice struct {
	LagoID           string `json:"lago_id"`
	Number           string `json:"number"`
	IssuingDate      string `json:"issuing_date"` // YYYY-MM-DD
	Status           string `json:"status"`       // draft, finalized, voided, failed, pending
	PaymentStatus    string `json:"payment_status"`
	Currency         string `json:"currency"`
	TotalAmountCents int64  `json:"total_amount_cents"`
	FileURL          string `json:"file_url"`
	Customer         *struct {
		ExternalID string `json:"external_id"`
	} `json:"customer,omitempty"`
}

// Issued is the invoice's issuing date.
func (i Invoice) Issued() (time.Time, error) { return time.Parse(time.DateOnly, i.IssuingDate) }

// InvoicePage is one page of a customer's invoices.
type InvoicePage struct {
	Invoices []Invoice `json:"invoices"`
	Meta     struct {
		CurrentPage int  `json:"current_page"`
		NextPage    *int `json:"next_page"`
		TotalPages  int  `json:"total_pages"`
		TotalCount  int  `json:"total_count"`
	} `json:"meta"`
}

// ListInvoices returns one page (from 1) of the customer's invoices.
func (c *Client) ListInvoices(ctx context.Context, externalCustomerID string, page, perPage int) (*InvoicePage, error) {
	q := url.Values{"external_customer_id": {externalCustomerID}, "page": {strconv.Itoa(max(page, 1))},
		"per_page": {strconv.Itoa(min(max(perPage, 1), 100))}}
	var out InvoicePage
	if err := c.do(ctx, "GET", "/invoices", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DownloadInvoice has Lago render the invoice's PDF and returns its URL
// (empty while Lago is still rendering it: ask again later).
func (c *Client) DownloadInvoice(ctx context.Context, lagoID string) (string, error) {
	var out struct {
		Invoice Invoice `json:"invoice"`
	}
	if err := c.do(ctx, "POST", "/invoices/"+url.PathEscape(lagoID)+"/download", nil, nil, &out); err != nil {
		return "", err
	}
	return out.Invoice.FileURL, nil
}

// ChargeUsage is the usage of one billable metric in the open period.
type ChargeUsage struct {
	Units          string `json:"units"`
	EventsCount    int64  `json:"events_count"`
	AmountCents    int64  `json:"amount_cents"`
	BillableMetric struct {
		Code string `json:"code"`
	} `json:"billable_metric"`
}

// CurrentUsage is a subscription's usage in its open billing period.
type CurrentUsage struct {
	FromDatetime     time.Time     `json:"from_datetime"`
	ToDatetime       time.Time     `json:"to_datetime"`
	Currency         string        `json:"currency"`
	AmountCents      int64         `json:"amount_cents"`
	TotalAmountCents int64         `json:"total_amount_cents"`
	ChargesUsage     []ChargeUsage `json:"charges_usage"`
}

// CurrentUsage returns the subscription's usage so far this period.
func (c *Client) CurrentUsage(ctx context.Context, externalCustomerID, externalSubscriptionID string) (*CurrentUsage, error) {
	var out struct {
		CustomerUsage CurrentUsage `json:"customer_usage"`
	}
	q := url.Values{"external_subscription_id": {externalSubscriptionID}}
	if err := c.do(ctx, "GET", "/customers/"+url.PathEscape(externalCustomerID)+"/current_usage", q, nil, &out); err != nil {
		return nil, err
	}
	return &out.CustomerUsage, nil
}

// WebhookPublicKey fetches the RSA key Lago signs jwt webhooks with (Lago
// serves it as a base64-encoded PEM).
func (c *Client) WebhookPublicKey(ctx context.Context) (*rsa.PublicKey, error) {
	var raw []byte
	if err := c.do(ctx, http.MethodGet, "/webhooks/public_key", nil, nil, &raw); err != nil {
		return nil, err
	}
	pemBytes, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("lago: the webhook public key is not base64: %w", err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("lago: the webhook public key is not PEM")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		if k, err2 := x509.ParsePKCS1PublicKey(block.Bytes); err2 == nil {
			return k, nil
		}
		return nil, fmt.Errorf("lago: parse the webhook public key: %w", err)
	}
	rk, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("lago: the webhook public key is not an RSA key")
	}
	return rk, nil
}
