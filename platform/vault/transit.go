package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Transit encrypts and decrypts with one key of a Transit secrets engine.
// The key is derived: each call names a context (avb: the tenant id), and
// a ciphertext decrypts only under the context it was made for.
// Decryptions are cached for CacheTTL (0: not cached), at most MaxCached.
type Transit struct {
	c     *Client
	mount string
	key   string

	CacheTTL  time.Duration
	MaxCached int

	mu    sync.Mutex
	cache map[string]plainEntry
}

type plainEntry struct {
	plain []byte
	until time.Time
}

// Transit returns the key's encrypter.
func (c *Client) Transit(mount, key string) *Transit {
	return &Transit{c: c, mount: mount, key: key, MaxCached: 10000, cache: map[string]plainEntry{}}
}

// ErrNotCiphertext: the text is not a Transit ciphertext.
var ErrNotCiphertext = errors.New("vault: not a transit ciphertext")

// KeyVersion is the key version a ciphertext ("vault:v3:...") was made with.
func KeyVersion(ciphertext string) (int, error) {
	rest, ok := strings.CutPrefix(ciphertext, "vault:v")
	if !ok {
		return 0, ErrNotCiphertext
	}
	v, _, ok := strings.Cut(rest, ":")
	n, err := strconv.Atoi(v)
	if !ok || err != nil || n <= 0 {
		return 0, ErrNotCiphertext
	}
	return n, nil
}

func (t *Transit) call(ctx context.Context, op string, data map[string]any) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, t.c.cfg.Timeout)
	defer cancel()
	s, err := t.c.api.Logical().WriteWithContext(ctx, t.mount+"/"+op+"/"+t.key, data)
	if err != nil {
		return nil, fmt.Errorf("vault: transit %s with key %s: %w", op, t.key, err)
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("vault: transit %s with key %s: empty answer", op, t.key)
	}
	return s.Data, nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// Encrypt returns the ciphertext of plain under context, and its key version.
func (t *Transit) Encrypt(ctx context.Context, plain []byte, context string) (string, int, error) {
	d, err := t.call(ctx, "encrypt", map[string]any{"plaintext": base64.StdEncoding.EncodeToString(plain), "context": b64(context)})
	if err != nil {
		return "", 0, err
	}
	c, _ := d["ciphertext"].(string)
	v, err := KeyVersion(c)
	if err != nil {
		return "", 0, err
	}
	t.remember(c, context, plain)
	return c, v, nil
}

// Decrypt returns the plaintext of ciphertext made under context.
func (t *Transit) Decrypt(ctx context.Context, ciphertext, context string) ([]byte, error) {
	if p, ok := t.cached(ciphertext, context); ok {
		return p, nil
	}
	d, err := t.call(ctx, "decrypt", map[string]any{"ciphertext": ciphertext, "context": b64(context)})
	if err != nil {
		return nil, err
	}
	s, _ := d["plaintext"].(string)
	plain, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("vault: transit decrypt: %w", err)
	}
	t.remember(ciphertext, context, plain)
	return plain, nil
}

// Rewrap returns ciphertext made again under the key's newest version,
// without the plaintext leaving Vault, and that version.
func (t *Transit) Rewrap(ctx context.Context, ciphertext, context string) (string, int, error) {
	d, err := t.call(ctx, "rewrap", map[string]any{"ciphertext": ciphertext, "context": b64(context)})
	if err != nil {
		return "", 0, err
	}
	c, _ := d["ciphertext"].(string)
	v, err := KeyVersion(c)
	return c, v, err
}

// LatestVersion is the key's newest version.
func (t *Transit) LatestVersion(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.c.cfg.Timeout)
	defer cancel()
	s, err := t.c.api.Logical().ReadWithContext(ctx, t.mount+"/keys/"+t.key)
	if err != nil {
		return 0, fmt.Errorf("vault: read transit key %s: %w", t.key, err)
	}
	if s == nil || s.Data == nil {
		return 0, fmt.Errorf("vault: transit key %s does not exist", t.key)
	}
	switch v := s.Data["latest_version"].(type) {
	case float64:
		return int(v), nil
	case interface{ Int64() (int64, error) }:
		n, err := v.Int64()
		return int(n), err
	}
	return 0, fmt.Errorf("vault: transit key %s has no latest_version", t.key)
}

func cacheKey(ciphertext, context string) string { return context + "\x00" + ciphertext }

func (t *Transit) cached(ciphertext, context string) ([]byte, bool) {
	if t.CacheTTL <= 0 {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.cache[cacheKey(ciphertext, context)]
	if !ok || time.Now().After(e.until) {
		return nil, false
	}
	return e.plain, true
}

func (t *Transit) remember(ciphertext, context string, plain []byte) {
	if t.CacheTTL <= 0 {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.cache) >= t.MaxCached {
		for k, e := range t.cache {
			if now.After(e.until) {
				delete(t.cache, k)
			}
		}
		if len(t.cache) >= t.MaxCached {
			clear(t.cache)
		}
	}
	t.cache[cacheKey(ciphertext, context)] = plainEntry{plain: plain, until: now.Add(t.CacheTTL)}
}
