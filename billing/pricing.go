// Package billing prices a tenant's usage. The prices here are the
// platform's list prices per tier; the billing provider's plans replace them
// once it is connected.
package billing

import (
	"math"
	"time"
)

// Price is a tier's list price, in the smallest currency unit (cents).
type Price struct {
	BaseFee           float64 // per month
	PerSession        float64
	PerAudioInMinute  float64
	PerAudioOutMinute float64
	PerThousandInTok  float64
	PerThousandOutTok float64
}

// Currency of the list prices.
const Currency = "USD"

// Prices per tenant tier.
var Prices = map[string]Price{
	"free":       {},
	"starter":    {BaseFee: 2900, PerAudioInMinute: 1.0, PerAudioOutMinute: 1.5, PerThousandInTok: 0.05, PerThousandOutTok: 0.15},
	"pro":        {BaseFee: 9900, PerAudioInMinute: 0.8, PerAudioOutMinute: 1.2, PerThousandInTok: 0.04, PerThousandOutTok: 0.12},
	"enterprise": {PerAudioInMinute: 0.6, PerAudioOutMinute: 0.9, PerThousandInTok: 0.03, PerThousandOutTok: 0.10},
}

// Usage is what a tenant used in a period.
type Usage struct {
	Sessions        float64
	AudioInMinutes  float64
	AudioOutMinutes float64
	InputTokens     float64
	OutputTokens    float64
	APICalls        float64
	// PhoneMinutes are the minutes of phone (SIP) calls: their own metric,
	// not priced yet.
	PhoneMinutes float64
}

// FromLedger reads the usage ledger's totals (kinds as the ledger names them).
func FromLedger(totals map[string]float64) Usage {
	return Usage{
		Sessions:        totals["session"],
		AudioInMinutes:  totals["audio_in_seconds"] / 60,
		AudioOutMinutes: totals["audio_out_seconds"] / 60,
		InputTokens:     totals["input_tokens"],
		OutputTokens:    totals["output_tokens"],
		APICalls:        totals["api_calls"],
		PhoneMinutes:    totals["phone_seconds"] / 60,
	}
}

// Line is the cost of one item.
type Line struct {
	Item      string
	Quantity  float64
	UnitPrice float64 // per unit (per thousand for tokens)
	Amount    int64   // rounded to the smallest unit
}

// Cost prices usage (without the base fee).
func (p Price) Cost(u Usage) []Line {
	line := func(item string, q, unit, per float64) Line {
		return Line{Item: item, Quantity: q, UnitPrice: unit, Amount: int64(math.Round(q / per * unit))}
	}
	return []Line{
		line("sessions", u.Sessions, p.PerSession, 1),
		line("audio_input_minutes", u.AudioInMinutes, p.PerAudioInMinute, 1),
		line("audio_output_minutes", u.AudioOutMinutes, p.PerAudioOutMinute, 1),
		line("input_tokens", u.InputTokens, p.PerThousandInTok, 1000),
		line("output_tokens", u.OutputTokens, p.PerThousandOutTok, 1000),
	}
}

// Month returns the calendar month (UTC) holding t.
func Month(t time.Time) (start, end time.Time) {
	t = t.UTC()
	start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 1, 0)
}

// Projection is the month so far and where it is heading.
type Projection struct {
	Start, End time.Time
	Lines      []Line // to date, with the base fee last
	ToDate     int64
	Projected  int64
}

// Project prices the month-to-date usage at now and extends the usage cost
// at the same rate to the month's end; the base fee is charged once.
func (p Price) Project(u Usage, now time.Time) Projection {
	start, end := Month(now)
	lines := p.Cost(u)
	var usage int64
	for _, l := range lines {
		usage += l.Amount
	}
	base := int64(math.Round(p.BaseFee))
	lines = append(lines, Line{Item: "base_fee", Quantity: 1, UnitPrice: p.BaseFee, Amount: base})
	// At least an hour has elapsed, so the first minutes of a month do not
	// project a moment's usage to a month.
	elapsed := max(now.Sub(start), time.Hour)
	scale := float64(end.Sub(start)) / float64(min(elapsed, end.Sub(start)))
	return Projection{Start: start, End: end, Lines: lines, ToDate: usage + base,
		Projected: int64(math.Round(float64(usage)*scale)) + base}
}
