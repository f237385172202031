package app_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/store"
)

// themeField is one field of avb.v1.Theme with generators of values its
// validation rules accept and refuse.
type themeField struct {
	name string // JSON name
	path string // the field violation's path
	good func(t *rapid.T, n int) any
	bad  func(t *rapid.T) any
}

func themeFields() []themeField {
	color := themeField{
		good: func(t *rapid.T, _ int) any { return rapid.StringMatching(`(#[0-9a-fA-F]{6})?`).Draw(t, "color") },
		bad: func(t *rapid.T) any {
			return rapid.StringMatching(`[a-z]{1,8}|#[0-9a-f]{1,5}|#[0-9a-f]{7,9}|#[g-z]{6}`).Draw(t, "bad color")
		},
	}
	long := func(max int) func(t *rapid.T) any {
		return func(t *rapid.T) any { return strings.Repeat("x", rapid.IntRange(max+1, max+300).Draw(t, "length")) }
	}
	short := func(max int) func(t *rapid.T, _ int) any {
		return func(t *rapid.T, _ int) any {
			return rapid.StringMatching(fmt.Sprintf(`[a-z ]{0,%d}`, min(max, 40))).Draw(t, "text")
		}
	}
	fields := []themeField{
		{name: "name", path: "theme.name",
			good: func(_ *rapid.T, n int) any { return fmt.Sprintf("theme %d", n) },
			bad: func(t *rapid.T) any {
				// 101 spaces break two rules: still one violation.
				return rapid.SampledFrom([]string{"", "   ", strings.Repeat("n", 101), strings.Repeat(" ", 101)}).Draw(t, "bad name")
			}},
		{name: "description", path: "theme.description", good: short(1000), bad: long(1000)},
		{name: "fontFamily", path: "theme.font_family", good: short(200), bad: long(200)},
		{name: "logoUrl", path: "theme.logo_url",
			good: func(t *rapid.T, _ int) any {
				return rapid.SampledFrom([]string{"", "https://cdn.example.com/logo.png", "https://a.test/x?y=1"}).Draw(t, "logo")
			},
			bad: func(t *rapid.T) any {
				return rapid.SampledFrom([]string{"http://cdn.example.com/logo.png", "not a url", "ftp://a.test/x", "https://" + strings.Repeat("a", 2050)}).Draw(t, "bad logo")
			}},
		{name: "borderRadiusPx", path: "theme.border_radius_px",
			good: func(t *rapid.T, _ int) any { return rapid.IntRange(0, 64).Draw(t, "radius") },
			bad: func(t *rapid.T) any {
				return rapid.OneOf(rapid.IntRange(-1000, -1), rapid.IntRange(65, 100000)).Draw(t, "bad radius")
			}},
	}
	for _, c := range []struct{ json, proto string }{
		{"primaryColor", "primary_color"}, {"secondaryColor", "secondary_color"},
		{"backgroundColor", "background_color"}, {"textColor", "text_color"},
	} {
		f := color
		f.name, f.path = c.json, "theme."+c.proto
		fields = append(fields, f)
	}
	return fields
}

// Property 9: whatever mix of fields is invalid, the request is refused with
// invalid_argument / validation_failed and one field violation for each bad
// field, none for a good one; with no bad field it succeeds.
func TestPropertyValidationNamesExactlyTheBadFields(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("validation", store.TierPro)
	dev := bearer(p.token("dev", ten.ID.String(), "developer"))
	fields := themeFields()
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		n++
		theme := map[string]any{}
		var want []string
		for _, f := range fields {
			switch rapid.IntRange(0, 2).Draw(rt, f.name) {
			case 0: // left out (name is then missing: required on create)
				if f.name == "name" {
					want = append(want, f.path)
				}
			case 1:
				theme[f.name] = f.good(rt, n)
			case 2:
				theme[f.name] = f.bad(rt)
				want = append(want, f.path)
			}
		}
		body, err := json.Marshal(map[string]any{"theme": theme})
		if err != nil {
			rt.Fatal(err)
		}
		r := p.call("/avb.v1.ThemeService/CreateTheme", string(body), dev...)
		if len(want) == 0 {
			if r.status != 200 {
				rt.Fatalf("a valid theme was refused: %d %s/%s %s\n%s", r.status, r.code, r.reason, r.raw, body)
			}
			return
		}
		if r.status != 400 || r.code != "invalid_argument" || r.reason != "validation_failed" {
			rt.Fatalf("got %d %s/%s, want 400 invalid_argument/validation_failed: %s\n%s", r.status, r.code, r.reason, r.raw, body)
		}
		got := fieldViolations(r.body)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			rt.Fatalf("violations %v, want %v\n%s", got, want, body)
		}
	})
}
