package signature

import (
	"errors"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// A receiver accepts the signed body once, within the tolerance, with the
// right secret; and refuses it tampered, replayed, expired, from the
// future, malformed or signed with another secret. During a rotation both
// secrets' receivers accept it.
func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"tool":"book_meeting","arguments":{"day":"tomorrow","time":"10:00"}}`)
	h := Sign(body, now, "whsec-new", "whsec-old")
	v := &Verifier{Secret: "whsec-new", Replays: &Replays{}, Now: func() time.Time { return now.Add(30 * time.Second) }}
	if err := v.Verify(h, body); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	if err := v.Verify(h, body); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replayed: %v", err)
	}
	old := &Verifier{Secret: "whsec-old", Now: v.Now}
	if err := old.Verify(h, body); err != nil {
		t.Fatalf("the rotated-out secret during the rotation: %v", err)
	}
	for name, c := range map[string]struct {
		v      *Verifier
		header string
		body   []byte
		want   error
	}{
		"tampered":   {&Verifier{Secret: "whsec-new", Now: v.Now}, h, []byte(strings.Replace(string(body), "10:00", "11:00", 1)), ErrMismatch},
		"expired":    {&Verifier{Secret: "whsec-new", Now: func() time.Time { return now.Add(6 * time.Minute) }}, h, body, ErrExpired},
		"future":     {&Verifier{Secret: "whsec-new", Now: func() time.Time { return now.Add(-6 * time.Minute) }}, h, body, ErrExpired},
		"other key":  {&Verifier{Secret: "whsec-other", Now: v.Now}, h, body, ErrMismatch},
		"no t":       {&Verifier{Secret: "whsec-new"}, "v1=abc", body, ErrMalformed},
		"no v1":      {&Verifier{Secret: "whsec-new"}, "t=1", body, ErrMalformed},
		"garbage":    {&Verifier{Secret: "whsec-new"}, "nonsense", body, ErrMalformed},
		"two stamps": {&Verifier{Secret: "whsec-new"}, "t=1,t=2,v1=00", body, ErrMalformed},
	} {
		if err := c.v.Verify(c.header, c.body); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// Whatever the body and secret, a signature verifies exactly for that body
// and secret; and Verify never panics on any header.
func TestSignVerifyProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		body := rapid.SliceOf(rapid.Byte()).Draw(rt, "body")
		secret := rapid.StringN(1, 40, -1).Draw(rt, "secret")
		now := time.Unix(rapid.Int64Range(1, 4_000_000_000).Draw(rt, "now"), 0)
		v := &Verifier{Secret: secret, Now: func() time.Time { return now }}
		h := Sign(body, now, secret)
		if err := v.Verify(h, body); err != nil {
			rt.Fatalf("own signature: %v", err)
		}
		if other := append([]byte{1}, body...); v.Verify(h, other) == nil {
			rt.Fatal("verified another body")
		}
		_ = v.Verify(rapid.String().Draw(rt, "header"), body)
	})
}

func FuzzVerify(f *testing.F) {
	f.Add("t=1800000000,v1=00", []byte("{}"))
	f.Add(",,=,t==", []byte(nil))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		v := &Verifier{Secret: "s", Now: func() time.Time { return time.Unix(1_800_000_000, 0) }}
		if v.Verify(header, body) == nil && !strings.Contains(header, Sign(body, time.Unix(1_800_000_000, 0), "s")[len("t=1800000000,"):]) {
			t.Fatalf("accepted a header without the body's signature: %q", header)
		}
	})
}
