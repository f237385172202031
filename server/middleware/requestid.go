// Package middleware holds the HTTP middleware and Connect interceptors every
// request passes through: request id, security headers, CORS, metrics,
// request logging, error mapping and stream draining.
package middleware

import (
	"crypto/rand"
	"encoding/hex"
)

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-ID"

// maxRequestIDLen bounds an accepted incoming request id.
const maxRequestIDLen = 128

// SaneRequestID reports whether an incoming request id may be kept: 1 to 128
// characters from [A-Za-z0-9._:-]. Anything else (empty, oversized, spaces,
// control characters, quotes) is replaced, so ids are safe in logs and headers.
func SaneRequestID(id string) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// NewRequestID returns a random 128-bit id in hex.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
