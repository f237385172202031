// Package lagotest is a stand-in for Lago's API in tests (Lago itself does
// not run here): it checks each request against the shapes of Lago's API
// reference, keeps what a real Lago would (customers, subscriptions, events
// deduplicated by transaction id, invoices), answers like Lago, errors
// included, and signs webhooks the way Lago does (jwt RS256 or hmac).
package lagotest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// APIKey is the key the stand-in expects.
const APIKey = "lago-standin-key"

// Codes are the billable metric codes the stand-in's plans know.
var Codes = []string{"sessions", "api_calls", "audio_minutes", "input_tokens", "output_tokens"}

// Event is a usage event as Lago received it.
type Event struct {
	TransactionID          string         `json:"transaction_id"`
	ExternalSubscriptionID string         `json:"external_subscription_id"`
	Code                   string         `json:"code"`
	Timestamp              int64          `json:"timestamp"`
	Properties             map[string]any `json:"properties"`
}

// Fault is how the stand-in answers a call instead of normally.
type Fault int

// Faults.
const (
	// Status answers with an error status without acting (429 carries
	// Retry-After: 0).
	Status Fault = iota
	// AcceptThenFail acts, then answers 500: the caller cannot tell Lago
	// kept the events (a crash between send and mark looks the same).
	AcceptThenFail
	// Hang never answers until the caller gives up.
	Hang
)

type fault struct {
	kind   Fault
	status int
}

// Server is a running stand-in.
type Server struct {
	*httptest.Server
	t   testing.TB
	key *rsa.PrivateKey
	// HMACKey signs hmac webhooks.
	HMACKey []byte
	// Issuer is the iss of jwt webhooks.
	Issuer string

	mu            sync.Mutex
	faults        []fault
	events        map[string]Event // by transaction id, first delivery kept
	deliveries    map[string]int   // times each transaction id was posted
	Customers     map[string]map[string]any
	Subscriptions map[string]map[string]any // by external id
	// Invoices are the invoices Lago issued, by customer external id,
	// newest first.
	Invoices   map[string][]map[string]any
	Terminated []string
	calls      []string
	problems   []string
}

// signingKey is Lago's webhook key, one per test binary (generating a
// 2048-bit key takes a while).
var signingKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// New starts a stand-in for the test.
func New(t testing.TB) *Server {
	key, err := signingKey()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, key: key, HMACKey: []byte("lago-hmac-key"), Issuer: "https://lago.standin",
		events: map[string]Event{}, deliveries: map[string]int{},
		Customers: map[string]map[string]any{}, Subscriptions: map[string]map[string]any{},
		Invoices: map[string][]map[string]any{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Lock holds the stand-in still while a test reads Customers or
// Subscriptions.
func (s *Server) Lock() { s.mu.Lock() }

// Unlock lets it go on.
func (s *Server) Unlock() { s.mu.Unlock() }

// Fail makes the next n calls answer with fault (status for Status).
func (s *Server) Fail(n int, kind Fault, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, fault{kind, status})
	}
}

// Heal drops the faults not used yet.
func (s *Server) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Events returns the events Lago keeps (one per transaction id).
func (s *Server) Events() map[string]Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps(s.events)
}

// Deliveries returns how many times each transaction id was posted.
func (s *Server) Deliveries() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps(s.deliveries)
}

func maps[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Calls lists the calls made so far ("POST /api/v1/events/batch").
func (s *Server) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Problems lists requests that did not match Lago's API; a test fails on any.
func (s *Server) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

func (s *Server) problem(w http.ResponseWriter, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.problems = append(s.problems, msg)
	s.mu.Unlock()
	answer(w, http.StatusUnprocessableEntity, map[string]any{"status": 422, "error": "Unprocessable Entity",
		"code": "validation_errors", "error_details": map[string]any{"request": []string{msg}}})
}

func answer(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	call := r.Method + " " + r.URL.Path
	s.mu.Lock()
	s.calls = append(s.calls, call)
	var f *fault
	if len(s.faults) > 0 && r.URL.Path != "/api/v1/webhooks/public_key" {
		f = &s.faults[0]
		s.faults = s.faults[1:]
	}
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+APIKey {
		answer(w, http.StatusUnauthorized, map[string]any{"status": 401, "error": "Unauthorized"})
		return
	}
	raw, _ := io.ReadAll(r.Body) // read first: only then does the server notice a caller that gave up
	if f != nil {
		switch f.kind {
		case Hang:
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		case Status:
			if f.status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "0")
			}
			answer(w, f.status, map[string]any{"status": f.status, "error": http.StatusText(f.status)})
			return
		}
	}
	var body map[string]any
	if r.Method != http.MethodGet {
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &body); err != nil {
				s.problem(w, "%s: body is not JSON", call)
				return
			}
			if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
				s.problem(w, "%s: Content-Type is %q", call, r.Header.Get("Content-Type"))
				return
			}
		}
	}
	status, out := s.route(w, r, call, body)
	if status == 0 {
		return // answered already
	}
	if f != nil && f.kind == AcceptThenFail {
		answer(w, http.StatusInternalServerError, map[string]any{"status": 500, "error": "Internal Server Error"})
		return
	}
	answer(w, status, out)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, call string, body map[string]any) (int, any) {
	switch {
	case call == "POST /api/v1/events/batch":
		return s.batch(w, body)
	case call == "POST /api/v1/customers":
		c, _ := body["customer"].(map[string]any)
		id, _ := c["external_id"].(string)
		if id == "" {
			s.problem(w, "customer without external_id")
			return 0, nil
		}
		s.mu.Lock()
		s.Customers[id] = c
		s.mu.Unlock()
		return 200, map[string]any{"customer": c}
	case call == "POST /api/v1/subscriptions":
		sub, _ := body["subscription"].(map[string]any)
		id, _ := sub["external_id"].(string)
		cust, _ := sub["external_customer_id"].(string)
		plan, _ := sub["plan_code"].(string)
		if id == "" || plan == "" {
			s.problem(w, "subscription without external_id or plan_code")
			return 0, nil
		}
		s.mu.Lock()
		_, known := s.Customers[cust]
		if known {
			sub["status"] = "active"
			s.Subscriptions[id] = sub
		}
		s.mu.Unlock()
		if !known {
			return 404, map[string]any{"status": 404, "error": "Not Found", "code": "customer_not_found"}
		}
		return 200, map[string]any{"subscription": sub}
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/api/v1/subscriptions/"):
		id := strings.TrimPrefix(r.URL.Path, "/api/v1/subscriptions/")
		s.mu.Lock()
		sub, ok := s.Subscriptions[id]
		if ok {
			sub["status"] = "terminated"
			s.Terminated = append(s.Terminated, id)
		}
		s.mu.Unlock()
		if !ok {
			return 404, map[string]any{"status": 404, "error": "Not Found", "code": "subscription_not_found"}
		}
		return 200, map[string]any{"subscription": sub}
	case call == "GET /api/v1/invoices":
		q := r.URL.Query()
		cust := q.Get("external_customer_id")
		if cust == "" || q.Get("page") == "" || q.Get("per_page") == "" {
			s.problem(w, "invoices listed without external_customer_id, page or per_page: %s", r.URL.RawQuery)
			return 0, nil
		}
		s.mu.Lock()
		invs := slices.Clone(s.Invoices[cust])
		s.mu.Unlock()
		return 200, map[string]any{"invoices": invs, "meta": map[string]any{"current_page": 1, "next_page": nil,
			"total_pages": 1, "total_count": len(invs)}}
	case call == "GET /api/v1/webhooks/public_key":
		der, _ := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))))
		return 0, nil
	}
	answer(w, http.StatusNotFound, map[string]any{"status": 404, "error": "Not Found"})
	return 0, nil
}

// batch keeps each event once per transaction id, as Lago does.
func (s *Server) batch(w http.ResponseWriter, body map[string]any) (int, any) {
	raw, _ := json.Marshal(body["events"])
	var evs []Event
	if err := json.Unmarshal(raw, &evs); err != nil || len(evs) == 0 {
		s.problem(w, "events/batch without events")
		return 0, nil
	}
	if len(evs) > 100 {
		s.problem(w, "events/batch with %d events (at most 100)", len(evs))
		return 0, nil
	}
	for _, e := range evs {
		if e.TransactionID == "" || e.ExternalSubscriptionID == "" || !slices.Contains(Codes, e.Code) || e.Timestamp <= 0 {
			s.problem(w, "event %+v misses a field or has an unknown code", e)
			return 0, nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range evs {
		s.deliveries[e.TransactionID]++
		if prev, ok := s.events[e.TransactionID]; ok {
			a, _ := json.Marshal(prev)
			b, _ := json.Marshal(e)
			if string(a) != string(b) {
				s.problems = append(s.problems, "transaction "+e.TransactionID+" sent again with other content")
			}
			continue
		}
		s.events[e.TransactionID] = e
	}
	return 200, map[string]any{"events": evs}
}

// Webhook is a delivery the stand-in signed, ready to post.
type Webhook struct {
	Body    []byte
	Headers http.Header
}

// Sign makes a webhook of payload signed with algorithm alg ("jwt" or
// "hmac"), under unique key key; iat, when not zero, goes in the jwt.
func (s *Server) Sign(payload any, alg, key string, iat time.Time) Webhook {
	body, err := json.Marshal(payload)
	if err != nil {
		s.t.Fatal(err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Lago-Signature-Algorithm", alg)
	h.Set("X-Lago-Unique-Key", key)
	switch alg {
	case "hmac":
		mac := hmac.New(sha256.New, s.HMACKey)
		mac.Write(body)
		h.Set("X-Lago-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	default:
		h.Set("X-Lago-Signature", s.SignJWT(string(body), s.key, iat))
	}
	return Webhook{Body: body, Headers: h}
}

// SignJWT signs data as Lago's jwt signature with key.
func (s *Server) SignJWT(data string, key *rsa.PrivateKey, iat time.Time) string {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	claims := map[string]any{"data": data, "iss": s.Issuer}
	if !iat.IsZero() {
		claims["iat"] = iat.Unix()
	}
	tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// Post sends a webhook to url and returns the status and body.
func Post(t testing.TB, url string, wh Webhook) (int, string) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(string(wh.Body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = wh.Headers.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// PrivateKey is the key the stand-in signs jwt webhooks with.
func (s *Server) PrivateKey() *rsa.PrivateKey { return s.key }
