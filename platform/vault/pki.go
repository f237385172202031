package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// Certificates issues a TLS certificate from a PKI secrets engine role and
// keeps it current: a new one is issued when two thirds of the current
// one's lifetime have passed, and served from then on to new handshakes
// (GetCertificate), while connections already open keep theirs.
type Certificates struct {
	c     *Client
	mount string
	role  string
	req   map[string]any

	cur    atomic.Pointer[issued]
	issued atomic.Int64
}

type issued struct {
	cert *tls.Certificate
	at   time.Time
}

// CertificateRequest says what the certificate names.
type CertificateRequest struct {
	CommonName string
	// AltNames are DNS names and IP addresses.
	AltNames []string
	TTL      time.Duration
}

// Certificates returns the issuer of role's certificates in the engine at
// mount.
func (c *Client) Certificates(mount, role string, r CertificateRequest) *Certificates {
	var dns, ips []string
	for _, n := range r.AltNames {
		if net.ParseIP(n) != nil {
			ips = append(ips, n)
		} else {
			dns = append(dns, n)
		}
	}
	req := map[string]any{"common_name": r.CommonName, "alt_names": strings.Join(dns, ","), "ip_sans": strings.Join(ips, ",")}
	if r.TTL > 0 {
		req["ttl"] = r.TTL.String()
	}
	return &Certificates{c: c, mount: mount, role: role, req: req}
}

// Issue asks Vault for a new certificate and makes it current.
func (p *Certificates) Issue(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.c.cfg.Timeout)
	defer cancel()
	s, err := p.c.api.Logical().WriteWithContext(ctx, p.mount+"/issue/"+p.role, p.req)
	if err != nil {
		return fmt.Errorf("vault: issue a certificate of role %s: %w", p.role, err)
	}
	if s == nil || s.Data == nil {
		return fmt.Errorf("vault: role %s issued no certificate", p.role)
	}
	certPEM, _ := s.Data["certificate"].(string)
	keyPEM, _ := s.Data["private_key"].(string)
	chain := certPEM
	if cas, ok := s.Data["ca_chain"].([]any); ok {
		for _, ca := range cas {
			if pem, ok := ca.(string); ok {
				chain += "\n" + pem
			}
		}
	}
	cert, err := tls.X509KeyPair([]byte(chain), []byte(keyPEM))
	if err != nil {
		return fmt.Errorf("vault: the certificate of role %s does not load: %w", p.role, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return err
		}
	}
	p.cur.Store(&issued{cert: &cert, at: time.Now()})
	p.issued.Add(1)
	return nil
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (p *Certificates) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := p.cur.Load()
	if c == nil {
		return nil, errors.New("no certificate issued yet")
	}
	return c.cert, nil
}

// Current returns the certificate served now (nil before the first Issue).
func (p *Certificates) Current() *x509.Certificate {
	if c := p.cur.Load(); c != nil {
		return c.cert.Leaf
	}
	return nil
}

// Issued counts the certificates issued so far.
func (p *Certificates) Issued() int { return int(p.issued.Load()) }

// Run renews the certificate until ctx ends: at two thirds of its lifetime
// (counted from when it was issued: Vault backdates NotBefore),
// retrying with backoff while Vault does not answer (the current one is
// served meanwhile, until it expires).
func (p *Certificates) Run(ctx context.Context) {
	for {
		cur := p.cur.Load()
		if cur == nil {
			return // Issue first
		}
		leaf := cur.cert.Leaf
		at := cur.at.Add(leaf.NotAfter.Sub(cur.at) * 2 / 3)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		for delay := 200 * time.Millisecond; ctx.Err() == nil; delay = min(2*delay, 30*time.Second) {
			err := p.Issue(ctx)
			if err == nil {
				p.c.cfg.Log.Info("TLS certificate renewed", "role", p.role, "serial", p.Current().SerialNumber.Text(16),
					"not_after", p.Current().NotAfter.UTC().Format(time.RFC3339))
				break
			}
			p.c.cfg.Log.Warn("TLS certificate not renewed; retrying", "role", p.role, "error", err.Error(),
				"current_expires_in", time.Until(leaf.NotAfter).Round(time.Second).String())
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
		}
	}
}
