// Package signature signs the requests avb sends to a tenant's webhooks, and
// verifies them the way a receiver should. The header is
//
//	Avb-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
//
// with one v1 per secret in use (two while a secret is being rotated). A
// receiver recomputes the HMAC over the timestamp, a dot and the raw body
// with its secret, compares in constant time, refuses a timestamp further
// than its tolerance from now (5 minutes is usual), and remembers the
// signatures it accepted until they expire, so a replay within the window
// is refused too.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header is the name of the signature header.
const Header = "Avb-Signature"

// Errors of Verify.
var (
	ErrMalformed = errors.New("signature header malformed")
	ErrMismatch  = errors.New("no signature matches the body")
	ErrExpired   = errors.New("signature timestamp outside the tolerance")
	ErrReplayed  = errors.New("signature already used")
)

func mac(secret string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(t, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Sign returns the header value for body at time now, with a signature per
// secret.
func Sign(body []byte, now time.Time, secrets ...string) string {
	t := now.Unix()
	var b strings.Builder
	b.WriteString("t=" + strconv.FormatInt(t, 10))
	for _, s := range secrets {
		b.WriteString(",v1=" + mac(s, t, body))
	}
	return b.String()
}

// Verifier checks signatures as a receiver should. The zero value has a
// tolerance of 5 minutes and remembers nothing; set Replays to refuse a
// signature seen before.
type Verifier struct {
	Secret    string
	Tolerance time.Duration
	Replays   *Replays
	Now       func() time.Time
}

// Verify checks header against body.
func (v *Verifier) Verify(header string, body []byte) error {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = 5 * time.Minute
	}
	var t int64
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrMalformed
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || t != 0 {
				return ErrMalformed
			}
			t = n
		case "v1":
			sigs = append(sigs, val)
		}
	}
	if t == 0 || len(sigs) == 0 {
		return ErrMalformed
	}
	at := time.Unix(t, 0)
	if d := now.Sub(at); d > tol || d < -tol {
		return ErrExpired
	}
	want := mac(v.Secret, t, body)
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			if v.Replays != nil && !v.Replays.first(s, at.Add(tol), now) {
				return ErrReplayed
			}
			return nil
		}
	}
	return ErrMismatch
}

// Replays remembers accepted signatures until their timestamp leaves the
// tolerance window.
type Replays struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// first records sig and reports whether it was new.
func (r *Replays) first(sig string, until, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]time.Time{}
	}
	for s, u := range r.seen {
		if now.After(u) {
			delete(r.seen, s)
		}
	}
	if _, ok := r.seen[sig]; ok {
		return false
	}
	r.seen[sig] = until
	return true
}
