// Package web serves the built web console (/console/) and API docs page
// (/docs/). `make web` builds them into web/dist with npm; a binary built
// without them answers with how to build them.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed all:dist
var dist embed.FS

// Handler serves dir ("console" or "docs") of the build under prefix; its
// pages may also fetch from the origins in connect (the OIDC issuer the
// console signs in with).
func Handler(prefix, dir string, connect ...string) http.Handler {
	csp := "default-src 'self'; script-src 'self' blob:; img-src 'self' data:; style-src 'self'; connect-src " +
		strings.Join(append([]string{"'self'"}, connect...), " ") + "; media-src 'self' blob:; worker-src 'self' blob:"
	sub, err := fs.Sub(dist, "dist/"+dir)
	if err == nil {
		if _, err = fs.Stat(sub, "index.html"); err != nil {
			sub = nil
		}
	}
	if sub == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "the "+dir+" is not built into this binary: run  make web  and rebuild", http.StatusNotFound)
		})
	}
	files := http.StripPrefix(prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == strings.TrimSuffix(prefix, "/") {
			http.Redirect(w, r, prefix, http.StatusMovedPermanently)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", csp)
		files.ServeHTTP(w, r)
	})
}
