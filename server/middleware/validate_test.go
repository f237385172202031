package middleware

import (
	"sync"
	"testing"

	"buf.build/go/protovalidate"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
)

// BenchmarkValidate compares the interceptor's check (protovalidate plus
// required fields, violations merged per field) with protovalidate alone,
// on a valid and an invalid create.
func BenchmarkValidate(b *testing.B) {
	v, err := protovalidate.New()
	if err != nil {
		b.Fatal(err)
	}
	x := validator{v: v, required: new(sync.Map)}
	for _, bc := range []struct {
		name string
		req  *avbv1.CreateThemeRequest
	}{
		{"valid", &avbv1.CreateThemeRequest{Theme: &avbv1.Theme{Name: "Night", PrimaryColor: "#112233", LogoUrl: "https://a.test/l.png", BorderRadiusPx: 8}}},
		{"invalid", &avbv1.CreateThemeRequest{Theme: &avbv1.Theme{PrimaryColor: "blue", LogoUrl: "http://a.test", BorderRadiusPx: 99}}},
	} {
		b.Run(bc.name+"/protovalidate", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = v.Validate(bc.req)
			}
		})
		b.Run(bc.name+"/interceptor", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = x.check(bc.req)
			}
		})
	}
}
