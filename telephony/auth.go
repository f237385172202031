package telephony

import (
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // SIP digest authentication is MD5 (RFC 3261, 2617)
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/icholy/digest"
)

// Trunk is one way a tenant's calls may come in: from its addresses, or
// with its digest credentials.
type Trunk struct {
	Name     string
	Username string
	// HA1 is MD5(username:realm:password), hex: the password itself is
	// never stored.
	HA1     string
	Sources []netip.Prefix
}

// HA1 is the stored form of a digest password in realm.
func HA1(username, realm, password string) string {
	sum := md5.Sum([]byte(username + ":" + realm + ":" + password)) //nolint:gosec
	return hex.EncodeToString(sum[:])
}

// nonceTTL is how long a challenge may be answered.
const nonceTTL = 5 * time.Minute

// Nonces makes challenges any avb instance can check: the nonce is its
// issue time signed with a shared key, so no state is kept between the
// challenge and the answer.
type Nonces struct {
	Key   []byte
	Realm string
	now   func() time.Time
}

func (n Nonces) clock() time.Time {
	if n.now != nil {
		return n.now()
	}
	return time.Now()
}

// Challenge is a WWW-Authenticate (or Proxy-Authenticate) value.
func (n Nonces) Challenge() string {
	b := make([]byte, 8, 40)
	binary.BigEndian.PutUint64(b, uint64(n.clock().UnixNano()))
	b = append(b, n.mac(b[:8])...)
	c := digest.Challenge{Realm: n.Realm, Nonce: base64.RawURLEncoding.EncodeToString(b), Algorithm: "MD5", QOP: []string{"auth"}}
	return c.String()
}

func (n Nonces) mac(ts []byte) []byte {
	m := hmac.New(sha256.New, n.Key)
	m.Write([]byte("sip-nonce:"))
	m.Write(ts)
	return m.Sum(nil)[:16]
}

// Errors of digest authentication.
var (
	ErrStaleNonce = errors.New("the challenge expired")
	ErrBadDigest  = errors.New("wrong credentials")
)

// Verify checks an Authorization value of a request (method) against the
// trunks; it returns the trunk that signed it.
func (n Nonces) Verify(header, method string, trunks []Trunk) (*Trunk, error) {
	cred, err := digest.ParseCredentials(header)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadDigest, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(cred.Nonce)
	if err != nil || len(raw) != 24 || !hmac.Equal(raw[8:], n.mac(raw[:8])) {
		return nil, ErrBadDigest
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
	if age := n.clock().Sub(issued); age > nonceTTL || age < -time.Minute {
		return nil, ErrStaleNonce
	}
	if cred.Realm != n.Realm || (cred.Algorithm != "" && !strings.EqualFold(cred.Algorithm, "MD5")) {
		return nil, ErrBadDigest
	}
	for i := range trunks {
		t := &trunks[i]
		if t.Username == "" || t.Username != cred.Username {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(response(t.HA1, method, cred)), []byte(strings.ToLower(cred.Response))) == 1 {
			return t, nil
		}
	}
	return nil, ErrBadDigest
}

// response is the digest response (RFC 2617) for HA1.
func response(ha1, method string, c *digest.Credentials) string {
	h := func(s string) string {
		sum := md5.Sum([]byte(s)) //nolint:gosec
		return hex.EncodeToString(sum[:])
	}
	ha2 := h(method + ":" + c.URI)
	if c.QOP == "" {
		return h(ha1 + ":" + c.Nonce + ":" + ha2)
	}
	return h(fmt.Sprintf("%s:%s:%08x:%s:%s:%s", ha1, c.Nonce, c.Nc, c.Cnonce, c.QOP, ha2))
}

// FromSource returns the trunk whose addresses include ip.
func FromSource(ip netip.Addr, trunks []Trunk) *Trunk {
	ip = ip.Unmap()
	for i := range trunks {
		for _, p := range trunks[i].Sources {
			if p.Contains(ip) {
				return &trunks[i]
			}
		}
	}
	return nil
}
