package billing

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// Property: the projection never falls below the month so far, equals it
// at the month's end, and grows with usage.
func TestPropertyProjection(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		tier := rapid.SampledFrom([]string{"free", "starter", "pro", "enterprise"}).Draw(rt, "tier")
		u := Usage{
			Sessions:        float64(rapid.IntRange(0, 1000).Draw(rt, "sessions")),
			AudioInMinutes:  rapid.Float64Range(0, 1e5).Draw(rt, "in"),
			AudioOutMinutes: rapid.Float64Range(0, 1e5).Draw(rt, "out"),
			InputTokens:     float64(rapid.IntRange(0, 1e8).Draw(rt, "itok")),
			OutputTokens:    float64(rapid.IntRange(0, 1e8).Draw(rt, "otok")),
		}
		start, end := Month(time.Date(2026, time.Month(rapid.IntRange(1, 12).Draw(rt, "month")), 1, 0, 0, 0, 0, time.UTC))
		now := start.Add(time.Duration(rapid.Int64Range(0, int64(end.Sub(start))).Draw(rt, "elapsed")))
		p := Prices[tier].Project(u, now)
		if p.Projected < p.ToDate {
			rt.Fatalf("projected %d below to date %d", p.Projected, p.ToDate)
		}
		if atEnd := Prices[tier].Project(u, end.Add(-time.Nanosecond)); atEnd.Projected-atEnd.ToDate > 1 {
			rt.Fatalf("at the month's end projected %d != to date %d", atEnd.Projected, atEnd.ToDate)
		}
		more := u
		more.AudioInMinutes += 100
		if Prices[tier].Project(more, now).ToDate < p.ToDate {
			rt.Fatal("more usage cost less")
		}
	})
}

func TestStarterPrices(t *testing.T) {
	now := time.Date(2026, 11, 16, 0, 0, 0, 0, time.UTC) // half of November
	p := Prices["starter"].Project(Usage{AudioInMinutes: 100, AudioOutMinutes: 100}, now)
	if p.ToDate != 2900+100+150 || p.Projected != 2900+500 {
		t.Fatalf("to date %d, projected %d", p.ToDate, p.Projected)
	}
}
