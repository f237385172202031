// Package lago is a client of Lago's REST API (v1), the usage-based
// billing system avb syncs tenants and usage to: customers, subscriptions,
// usage events, invoices and current usage.
//
// Every call has a deadline. Answers 429 and 5xx, and failures to reach
// Lago, are retried a bounded number of times with exponential backoff and
// full jitter, honouring Retry-After; other 4xx answers are permanent and
// come back as *APIError with the body Lago returned. The API key is sent
// only in the Authorization header and never appears in an error.
package lago

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentvoicebox/avb/platform/secret"
)

// MaxBatch is the most events one batch may carry.
const MaxBatch = 100

// Client calls one Lago instance.
type Client struct {
	base *url.URL
	key  *secret.Value
	http *http.Client
	// AttemptTimeout bounds one HTTP exchange; MaxAttempts bounds the
	// tries of a retryable call; BaseDelay and MaxDelay shape the backoff
	// (full jitter between 0 and min(MaxDelay, BaseDelay·2^n)), and a
	// Retry-After longer than MaxRetryAfter is not waited for.
	AttemptTimeout time.Duration
	MaxAttempts    int
	BaseDelay      time.Duration
	MaxDelay       time.Duration
	MaxRetryAfter  time.Duration
}

// New returns a client of the Lago API at baseURL (e.g.
// https://api.getlago.com), authenticating with apiKey.
func New(baseURL, apiKey string, hc *http.Client) (*Client, error) {
	return NewWithKey(baseURL, secret.New(apiKey), hc)
}

// NewWithKey is New with a key that may be rotated while the client runs
// (read from Vault): each request carries its current value.
func NewWithKey(baseURL string, apiKey *secret.Value, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("lago: base URL %q is not an http(s) URL", baseURL)
	}
	if apiKey.Get() == "" {
		return nil, errors.New("lago: an API key is required")
	}
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: u, key: apiKey, http: hc, AttemptTimeout: 10 * time.Second, MaxAttempts: 4,
		BaseDelay: 200 * time.Millisecond, MaxDelay: 5 * time.Second, MaxRetryAfter: 30 * time.Second}, nil
}

// String names the client without its key.
func (c *Client) String() string { return "lago client of " + c.base.String() }

// APIError is an answer of Lago other than success.
type APIError struct {
	Status int
	// Code is Lago's machine-readable code ("validation_errors",
	// "subscription_not_found"...) when it sent one.
	Code    string
	Message string
	// Details is Lago's error_details (for validation errors, the fields
	// and their problems).
	Details json.RawMessage
	// Body is the answer as Lago sent it (at most 64 KiB).
	Body       []byte
	retryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("lago: %d %s", e.Status, e.Message)
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if len(e.Details) > 0 && string(e.Details) != "null" {
		msg += ": " + string(e.Details)
	}
	return msg
}

// Temporary reports whether the call may succeed if tried again.
func (e *APIError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// IsNotFound reports whether err is Lago's 404.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// do sends one call, retrying what may succeed later, and decodes the
// answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("lago: encode %s %s: %w", method, path, err)
		}
		body = b
	}
	u := *c.base
	u.Path += "/api/v1" + path
	u.RawQuery = query.Encode()
	var last error
	for attempt := 0; attempt < max(c.MaxAttempts, 1); attempt++ {
		if attempt > 0 {
			if err := c.wait(ctx, attempt, last); err != nil {
				return err
			}
		}
		err := c.once(ctx, method, u.String(), body, out)
		if err == nil || !retryable(ctx, err) {
			return err
		}
		last = err
	}
	return fmt.Errorf("lago: %s %s: gave up after %d attempts: %w", method, path, max(c.MaxAttempts, 1), last)
}

// retryable: 429, 5xx, and failures to reach Lago or hear from it in time
// (not the caller's own cancellation).
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var e *APIError
	if errors.As(err, &e) {
		return e.Temporary()
	}
	var te *transportError
	return errors.As(err, &te)
}

// transportError is a failure to exchange with Lago at all.
type transportError struct{ err error }

func (t *transportError) Error() string { return "lago: " + t.err.Error() }
func (t *transportError) Unwrap() error { return t.err }

// wait sleeps before attempt: Lago's Retry-After when it sent one (and it
// is not too long), else exponential backoff with full jitter.
func (c *Client) wait(ctx context.Context, attempt int, last error) error {
	d := time.Duration(rand.Int64N(int64(min(c.MaxDelay, c.BaseDelay<<(attempt-1))) + 1))
	var e *APIError
	if errors.As(last, &e) && e.retryAfter > 0 {
		if e.retryAfter > c.MaxRetryAfter {
			return fmt.Errorf("lago: asked to retry after %s, longer than %s: %w", e.retryAfter, c.MaxRetryAfter, last)
		}
		d = e.retryAfter
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return fmt.Errorf("lago: no time left to retry: %w", last)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Client) once(ctx context.Context, method, u string, body []byte, out any) error {
	actx, cancel := context.WithTimeout(ctx, c.AttemptTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key.Get())
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "avb-lago-client/1")
	res, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &transportError{err: scrub(err, u)}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &transportError{err: err}
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return apiError(res, raw)
	}
	if b, ok := out.(*[]byte); ok { // an answer that is not JSON
		*b = raw
		return nil
	}
	if out == nil || len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("lago: decode the answer to %s: %w", method, err)
	}
	return nil
}

// scrub keeps the URL's query out of a transport error.
func scrub(err error, u string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, strings.SplitN(u, "?", 2)[0], ue.Err)
	}
	return err
}

func apiError(res *http.Response, raw []byte) *APIError {
	e := &APIError{Status: res.StatusCode, Message: http.StatusText(res.StatusCode), Body: raw[:min(len(raw), 64<<10)]}
	var parsed struct {
		Error   string          `json:"error"`
		Code    string          `json:"code"`
		Details json.RawMessage `json:"error_details"`
	}
	if json.Unmarshal(raw, &parsed) == nil {
		if parsed.Error != "" {
			e.Message = parsed.Error
		}
		e.Code, e.Details = parsed.Code, parsed.Details
	}
	if ra := res.Header.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
			e.retryAfter = time.Duration(s) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			e.retryAfter = max(time.Until(t), time.Millisecond)
		}
	}
	return e
}
