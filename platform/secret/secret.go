// Package secret holds secrets that may change while avb runs: a value read
// from Vault is replaced when a new version appears, and a replaced value
// may stay valid for a grace period, so that what was signed with it (a
// client token, a webhook) still verifies while the new one spreads.
package secret

import (
	"slices"
	"sync"
	"time"
)

// Value is one secret. The zero Value and a nil *Value hold "".
type Value struct {
	mu      sync.RWMutex
	cur     string
	retired []retired
	now     func() time.Time
}

type retired struct {
	val   string
	until time.Time
}

// New returns a Value holding s.
func New(s string) *Value { return &Value{cur: s} }

// Get returns the current value.
func (v *Value) Get() string {
	if v == nil {
		return ""
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.cur
}

// Set replaces the value and reports whether it changed. The value it
// replaces stays valid (in Valid) for grace.
func (v *Value) Set(s string, grace time.Duration) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s == v.cur {
		return false
	}
	now := v.clock()
	v.retired = slices.DeleteFunc(v.retired, func(r retired) bool { return !now.Before(r.until) || r.val == s })
	if v.cur != "" && grace > 0 {
		v.retired = append(v.retired, retired{val: v.cur, until: now.Add(grace)})
	}
	v.cur = s
	return true
}

// Valid returns the values a signature may have been made with: the current
// one first, then those replaced less than their grace period ago.
func (v *Value) Valid() []string {
	if v == nil {
		return nil
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]string, 0, 1+len(v.retired))
	if v.cur != "" {
		out = append(out, v.cur)
	}
	now := v.clock()
	for _, r := range v.retired {
		if now.Before(r.until) {
			out = append(out, r.val)
		}
	}
	return out
}

func (v *Value) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}
