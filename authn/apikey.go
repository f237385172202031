package authn

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// API key format: "avb_" + 32 random bytes, base64url without padding
// (43 characters): 47 characters in all, 256 bits of entropy.
const (
	APIKeyPrefix    = "avb_"
	apiKeyRandBytes = 32
	apiKeyLen       = len(APIKeyPrefix) + 43
	// displayPrefixLen is how much of a key is stored in clear to recognize it.
	displayPrefixLen = len(APIKeyPrefix) + 8
)

// NewAPIKey returns a fresh key secret, its display prefix and its hash.
// Only the prefix and the hash are ever stored.
func NewAPIKey() (secret, prefix string, hash []byte) {
	b := make([]byte, apiKeyRandBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	secret = APIKeyPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, secret[:displayPrefixLen], HashAPIKey(secret)
}

// HashAPIKey is the stored form of a key: SHA-256 of the whole secret. A
// server-side pepper would add nothing against guessing (256 random bits
// cannot be brute-forced from the hash) and would make the pepper itself a
// secret whose loss or rotation breaks every key, so there is none.
func HashAPIKey(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// LooksLikeAPIKey reports whether s has the shape of a key (it says nothing
// of whether the key exists).
func LooksLikeAPIKey(s string) bool {
	if len(s) != apiKeyLen || !strings.HasPrefix(s, APIKeyPrefix) {
		return false
	}
	for _, c := range s[len(APIKeyPrefix):] {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
