package signature_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/agentvoicebox/avb/platform/signature"
)

// receiver:start
// toolHandler receives avb's webhook tool calls: it verifies the signature
// over the raw body before anything else, and answers with what the agent
// should say.
func toolHandler(secret string) http.Handler {
	v := &signature.Verifier{Secret: secret, Tolerance: 5 * time.Minute, Replays: &signature.Replays{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		if err := v.Verify(r.Header.Get(signature.Header), body); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized) // tampered, replayed or expired
			return
		}
		// body is {"type":"tool_call","session_id":…,"call_id":…,"name":…,"arguments":{…}};
		// the Idempotency-Key header is the call id.
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"say":"Booked for tomorrow at ten."}`)
	})
}

// receiver:end

// The README's receiver, fed what avb sends, then a tampered body, the
// same request again, and a request signed ten minutes ago.
func Example_receiver() {
	const secret = "whsec_example"
	h := toolHandler(secret)
	body := `{"type":"tool_call","session_id":"s","call_id":"call_1","name":"book_meeting","arguments":{"day":"tomorrow"}}`
	send := func(body string, at time.Time) {
		r := httptest.NewRequest(http.MethodPost, "/tools", strings.NewReader(body))
		r.Header.Set(signature.Header, signature.Sign([]byte(body), at, secret))
		if body == "tampered" {
			r = httptest.NewRequest(http.MethodPost, "/tools", strings.NewReader(`{"name":"wire_money"}`))
			r.Header.Set(signature.Header, signature.Sign([]byte(`{"name":"book_meeting"}`), at, secret))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, strings.TrimSpace(w.Body.String()))
	}
	now := time.Now()
	send(body, now)
	send("tampered", now)
	send(body, now)
	send(body, now.Add(-10*time.Minute))
	// Output:
	// 200 {"say":"Booked for tomorrow at ten."}
	// 401 no signature matches the body
	// 401 signature already used
	// 401 signature timestamp outside the tolerance
}
