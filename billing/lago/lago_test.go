package lago_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/billing/lago"
	"github.com/agentvoicebox/avb/platform/secret"
)

const apiKey = "lago-test-key-never-in-errors"

// exchange is one recorded request and Lago's answer (testdata/*.json, in
// the shapes of Lago's API reference).
type exchange struct {
	Request struct {
		Method string            `json:"method"`
		Path   string            `json:"path"`
		Query  map[string]string `json:"query"`
		Body   json.RawMessage   `json:"body"`
	} `json:"request"`
	Response struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	} `json:"response"`
}

func load(t *testing.T, name string) exchange {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var x exchange
	if err := json.Unmarshal(raw, &x); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return x
}

// standIn answers like Lago with the recorded exchange, after checking the
// request against it: method, path, query, the bearer key, JSON headers
// and the body's content.
func standIn(t *testing.T, x exchange) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != x.Request.Method || r.URL.Path != x.Request.Path:
			t.Errorf("request %s %s, recorded %s %s", r.Method, r.URL.Path, x.Request.Method, x.Request.Path)
		case r.Header.Get("Authorization") != "Bearer "+apiKey:
			t.Errorf("Authorization %q", r.Header.Get("Authorization"))
		case len(x.Request.Body) > 0 && r.Header.Get("Content-Type") != "application/json":
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		case len(x.Request.Body) > 0 && !sameJSON(body, x.Request.Body):
			t.Errorf("body\n%s\nrecorded\n%s", body, x.Request.Body)
		case len(x.Request.Body) == 0 && len(body) > 0:
			t.Errorf("a body where none was recorded: %s", body)
		}
		for k, v := range x.Request.Query {
			if got := r.URL.Query().Get(k); got != v {
				t.Errorf("query %s=%q, recorded %q", k, got, v)
			}
		}
		for k, v := range x.Response.Headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(x.Response.Status)
		_, _ = w.Write(x.Response.Body)
	}))
	t.Cleanup(s.Close)
	return s
}

func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func client(t *testing.T, url string) *lago.Client {
	t.Helper()
	c, err := lago.New(url, apiKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.BaseDelay, c.MaxDelay = 5*time.Millisecond, 20*time.Millisecond
	return c
}

func TestContractAgainstRecordedExchanges(t *testing.T) {
	ctx := context.Background()
	const tenant, sub = "5eb02857-a71e-4ea2-bcf9-57d3a41bc6ba", "avb-5eb02857-a71e-4ea2-bcf9-57d3a41bc6ba"

	c := client(t, standIn(t, load(t, "customers_upsert")).URL)
	cust, err := c.UpsertCustomer(ctx, lago.Customer{ExternalID: tenant, Name: "Acme Voice", Email: "billing@acme.test", Currency: "USD",
		Metadata: []lago.Metadata{{Key: "tenant_slug", Value: "acme"}}})
	if err != nil || cust.LagoID == "" || cust.ExternalID != tenant {
		t.Fatalf("customer %+v %v", cust, err)
	}

	c = client(t, standIn(t, load(t, "subscriptions_create")).URL)
	s, err := c.CreateSubscription(ctx, lago.Subscription{ExternalID: sub, ExternalCustomerID: tenant, PlanCode: "avb_pro", BillingTime: "calendar"})
	if err != nil || s.Status != "active" || s.PlanCode != "avb_pro" {
		t.Fatalf("subscription %+v %v", s, err)
	}

	c = client(t, standIn(t, load(t, "subscriptions_terminate")).URL)
	if err := c.TerminateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	c = client(t, standIn(t, load(t, "subscriptions_terminate_unknown")).URL)
	if err := c.TerminateSubscription(ctx, "avb-gone"); err != nil {
		t.Fatalf("terminating a subscription Lago does not know: %v", err)
	}

	c = client(t, standIn(t, load(t, "events_batch")).URL)
	if err := c.SendEvents(ctx, []lago.Event{
		{TransactionID: "9f1c2d3e-0000-4000-8000-000000000001", ExternalSubscriptionID: sub, Code: "audio_minutes", Timestamp: 1795000000, Properties: map[string]any{"minutes": 2.5}},
		{TransactionID: "9f1c2d3e-0000-4000-8000-000000000002", ExternalSubscriptionID: sub, Code: "output_tokens", Timestamp: 1795000000, Properties: map[string]any{"tokens": 120}},
	}); err != nil {
		t.Fatal(err)
	}

	c = client(t, standIn(t, load(t, "invoices_list")).URL)
	page, err := c.ListInvoices(ctx, tenant, 1, 20)
	if err != nil || len(page.Invoices) != 2 || page.Meta.NextPage != nil || page.Invoices[0].TotalAmountCents != 10412 {
		t.Fatalf("invoices %+v %v", page, err)
	}
	if at, err := page.Invoices[1].Issued(); err != nil || at.Month() != time.October {
		t.Fatalf("issued %v %v", at, err)
	}

	c = client(t, standIn(t, load(t, "invoices_download")).URL)
	if u, err := c.DownloadInvoice(ctx, "7a907a90-7a90-7a90-7a90-7a907a907a90"); err != nil || !strings.HasSuffix(u, ".pdf") {
		t.Fatalf("download %q %v", u, err)
	}

	c = client(t, standIn(t, load(t, "current_usage")).URL)
	u, err := c.CurrentUsage(ctx, tenant, sub)
	if err != nil || u.TotalAmountCents != 312 || len(u.ChargesUsage) != 2 || u.ChargesUsage[0].BillableMetric.Code != "audio_minutes" {
		t.Fatalf("usage %+v %v", u, err)
	}
}

// A 4xx is permanent: one try, surfaced with Lago's code and details.
func TestPermanentErrorsAreSurfacedWithLagosBody(t *testing.T) {
	x := load(t, "events_batch_invalid")
	var calls atomic.Int32
	inner := standIn(t, x)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		proxyTo(w, r, inner.URL)
	}))
	defer s.Close()
	err := client(t, s.URL).SendEvents(context.Background(), []lago.Event{{TransactionID: "bad-1", ExternalSubscriptionID: "avb-unknown", Timestamp: 1795000000}})
	var ae *lago.APIError
	if !errors.As(err, &ae) || ae.Status != 422 || ae.Code != "validation_errors" || !strings.Contains(err.Error(), "value_is_mandatory") {
		t.Fatalf("error %v", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("a 422 was tried %d times", calls.Load())
	}
	if strings.Contains(err.Error(), apiKey) {
		t.Fatal("the API key is in the error")
	}
	if err := client(t, s.URL).SendEvents(context.Background(), make([]lago.Event, lago.MaxBatch+1)); err == nil {
		t.Fatal("a batch over 100 events was sent")
	}
}

func proxyTo(w http.ResponseWriter, r *http.Request, target string) {
	body, _ := io.ReadAll(r.Body)
	req, _ := http.NewRequest(r.Method, target+r.URL.RequestURI(), bytes.NewReader(body))
	req.Header = r.Header.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	for k, v := range res.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, res.Body)
}

// 429 with Retry-After and 5xx are retried (Retry-After honoured), then
// the recorded answer is taken; retries stop at MaxAttempts.
func TestTemporaryErrorsAreRetriedWithinBounds(t *testing.T) {
	inner := standIn(t, load(t, "events_batch"))
	var calls atomic.Int32
	var times []time.Time
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		times = append(times, time.Now())
		switch calls.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"status":429,"error":"Too Many Requests"}`))
		case 2:
			w.WriteHeader(http.StatusBadGateway)
		default:
			proxyTo(w, r, inner.URL)
		}
	}))
	defer s.Close()
	events := []lago.Event{
		{TransactionID: "9f1c2d3e-0000-4000-8000-000000000001", ExternalSubscriptionID: "avb-5eb02857-a71e-4ea2-bcf9-57d3a41bc6ba", Code: "audio_minutes", Timestamp: 1795000000, Properties: map[string]any{"minutes": 2.5}},
		{TransactionID: "9f1c2d3e-0000-4000-8000-000000000002", ExternalSubscriptionID: "avb-5eb02857-a71e-4ea2-bcf9-57d3a41bc6ba", Code: "output_tokens", Timestamp: 1795000000, Properties: map[string]any{"tokens": 120}},
	}
	if err := client(t, s.URL).SendEvents(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 || times[1].Sub(times[0]) < 900*time.Millisecond {
		t.Fatalf("%d calls; Retry-After waited %v", calls.Load(), times[1].Sub(times[0]))
	}

	// Always 503: MaxAttempts tries, then the last answer.
	calls.Store(0)
	always := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer always.Close()
	err := client(t, always.URL).SendEvents(context.Background(), events)
	var ae *lago.APIError
	if !errors.As(err, &ae) || ae.Status != 503 || calls.Load() != 4 {
		t.Fatalf("%d calls, %v", calls.Load(), err)
	}
	// A Retry-After beyond what the client waits for ends at once.
	calls.Store(0)
	long := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer long.Close()
	if err := client(t, long.URL).SendEvents(context.Background(), events); err == nil || calls.Load() != 1 {
		t.Fatalf("%d calls, %v", calls.Load(), err)
	}
}

// Lago refusing connections and Lago hung: each attempt ends at its
// deadline, and the whole call within attempts × deadline plus backoff.
func TestRefusedAndHungLagoAreBoundedInTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	c := client(t, refused)
	start := time.Now()
	if _, err := c.UpsertCustomer(context.Background(), lago.Customer{ExternalID: "x"}); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("refused: %v after %v", err, time.Since(start))
	} else if strings.Contains(err.Error(), apiKey) {
		t.Fatal("the API key is in the error")
	}

	stop := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client going away
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer hung.Close()
	defer close(stop)
	c = client(t, hung.URL)
	c.AttemptTimeout, c.MaxAttempts = 200*time.Millisecond, 3
	start = time.Now()
	_, err = c.UpsertCustomer(context.Background(), lago.Customer{ExternalID: "x"})
	if took := time.Since(start); err == nil || took > 2*time.Second || took < 600*time.Millisecond {
		t.Fatalf("hung: %v after %v", err, took)
	}
	// The caller's deadline wins over the retries.
	c.AttemptTimeout, c.MaxAttempts = 5*time.Second, 10
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := c.UpsertCustomer(ctx, lago.Customer{ExternalID: "x"}); err == nil || time.Since(start) > time.Second {
		t.Fatalf("deadline: %v after %v", err, time.Since(start))
	}
}

func TestNewRefusesBadConfiguration(t *testing.T) {
	for _, c := range []struct{ url, key string }{{"", "k"}, {"ftp://x", "k"}, {"http://lago", ""}} {
		if _, err := lago.New(c.url, c.key, nil); err == nil {
			t.Errorf("New(%q, %q) accepted", c.url, c.key)
		}
	}
	c, _ := lago.New("https://lago.test", apiKey, nil)
	if strings.Contains(c.String(), apiKey) {
		t.Fatal("the client prints its key")
	}
}

// A key rotated while the client runs (a new version in Vault) is sent
// from the next request on.
func TestRotatedKeyIsUsedAtOnce(t *testing.T) {
	t.Parallel()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"invoices":[],"meta":{"current_page":1,"total_pages":1}}`))
	}))
	t.Cleanup(srv.Close)
	key := secret.New("key-one")
	c, err := lago.NewWithKey(srv.URL, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"key-one", "key-two"} {
		key.Set(k, 0)
		if _, err := c.ListInvoices(t.Context(), "t", 1, 10); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(seen, []string{"Bearer key-one", "Bearer key-two"}) {
		t.Fatalf("keys sent: %q", seen)
	}
}
