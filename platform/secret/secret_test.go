package secret

import (
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestRotationKeepsTheOldValueForItsGrace(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	v := New("one")
	v.now = func() time.Time { return now }
	if !v.Set("two", time.Minute) || v.Get() != "two" {
		t.Fatalf("Set did not replace: %q", v.Get())
	}
	if got := v.Valid(); !slices.Equal(got, []string{"two", "one"}) {
		t.Fatalf("within grace: %q", got)
	}
	now = now.Add(time.Minute)
	if got := v.Valid(); !slices.Equal(got, []string{"two"}) {
		t.Fatalf("after grace: %q", got)
	}
	if v.Set("two", time.Minute) {
		t.Fatal("setting the same value reported a change")
	}
	var none *Value
	if none.Get() != "" || none.Valid() != nil {
		t.Fatal("a nil Value is not empty")
	}
}

// Whatever the sequence of rotations, the current value is valid and comes
// first, no value is listed twice, and nothing outlives its grace.
func TestValidProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		now := time.Unix(0, 0)
		v := New("")
		v.now = func() time.Time { return now }
		setAt := map[string]time.Time{}
		for range rapid.IntRange(1, 30).Draw(rt, "steps") {
			now = now.Add(time.Duration(rapid.IntRange(0, 120).Draw(rt, "advance")) * time.Second)
			s := rapid.SampledFrom([]string{"a", "b", "c", "d"}).Draw(rt, "value")
			if v.Get() != s {
				setAt[v.Get()] = now // the old value is retired now
			}
			v.Set(s, time.Minute)
			valid := v.Valid()
			if len(valid) == 0 || valid[0] != s {
				rt.Fatalf("current %q is not first in %q", s, valid)
			}
			seen := map[string]bool{}
			for _, x := range valid {
				if seen[x] || x == "" {
					rt.Fatalf("%q listed twice or empty in %q", x, valid)
				}
				seen[x] = true
				if x != s && now.Sub(setAt[x]) >= time.Minute {
					rt.Fatalf("%q retired at %v still valid at %v", x, setAt[x], now)
				}
			}
		}
	})
}
