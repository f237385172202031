package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Database leases credentials from a database secrets engine role and keeps
// a current one: the lease is renewed at half its duration, and when Vault
// will not extend it far enough (the role's max TTL comes near) or renewal
// fails, a new credential is leased and Rotated is called, before the old
// one expires. Whoever connects reads Current at each new connection.
type Database struct {
	c     *Client
	mount string
	role  string

	mu       sync.RWMutex
	cur      dbLease
	rotation int
}

type dbLease struct {
	user, password string
	id             string
	duration       time.Duration // as first granted
	expires        time.Time
}

// Database returns the leases of role in the engine at mount.
func (c *Client) Database(mount, role string) *Database {
	return &Database{c: c, mount: mount, role: role}
}

// Lease takes a new credential and makes it current.
func (d *Database) Lease(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.c.cfg.Timeout)
	defer cancel()
	s, err := d.c.api.Logical().ReadWithContext(ctx, d.mount+"/creds/"+d.role)
	if err != nil {
		return fmt.Errorf("vault: lease database credentials of role %s: %w", d.role, err)
	}
	if s == nil || s.Data == nil {
		return fmt.Errorf("vault: database role %s returned no credentials", d.role)
	}
	user, _ := s.Data["username"].(string)
	pass, _ := s.Data["password"].(string)
	if user == "" || s.LeaseDuration <= 0 {
		return fmt.Errorf("vault: database role %s returned no user or no lease", d.role)
	}
	dur := time.Duration(s.LeaseDuration) * time.Second
	d.mu.Lock()
	d.cur = dbLease{user: user, password: pass, id: s.LeaseID, duration: dur, expires: time.Now().Add(dur)}
	d.rotation++
	d.mu.Unlock()
	return nil
}

// Current returns the current credential.
func (d *Database) Current() (user, password string) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cur.user, d.cur.password
}

// Rotations counts the credentials leased so far (the first included).
func (d *Database) Rotations() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.rotation
}

// Run keeps a credential current until ctx ends; rotated is called after
// each new credential became current (the caller retires the connections
// of the old one: they may finish what they do, it stays valid until its
// lease expires).
func (d *Database) Run(ctx context.Context, rotated func()) {
	for {
		d.mu.RLock()
		l := d.cur
		d.mu.RUnlock()
		// Renew at half the lease's original duration (or at once if it is
		// already past that point).
		at := l.expires.Add(-l.duration / 2)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		if d.renew(ctx, l) {
			continue
		}
		// Rotate, retrying while Vault does not answer, until the old lease
		// expires; after that, keep trying (new connections fail meanwhile).
		for delay := 200 * time.Millisecond; ctx.Err() == nil; delay = min(2*delay, 10*time.Second) {
			err := d.Lease(ctx)
			if err == nil {
				d.c.cfg.Log.Info("database credentials rotated", "role", d.role, "lease_seconds", int(d.currentDuration().Seconds()))
				rotated()
				break
			}
			d.c.cfg.Log.Warn("database credentials not rotated; retrying", "role", d.role, "error", err.Error(),
				"old_expires_in", time.Until(l.expires).Round(time.Second).String())
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
		}
	}
}

func (d *Database) currentDuration() time.Duration {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cur.duration
}

// renew extends l and reports whether it still has at least half its
// original duration to run (otherwise it is time to rotate).
func (d *Database) renew(ctx context.Context, l dbLease) bool {
	rctx, cancel := context.WithTimeout(ctx, d.c.cfg.Timeout)
	defer cancel()
	s, err := d.c.api.Sys().RenewWithContext(rctx, l.id, int(l.duration.Seconds()))
	if err != nil || s == nil {
		if err == nil {
			err = errors.New("no answer")
		}
		d.c.cfg.Log.Warn("database lease not renewed; rotating", "role", d.role, "error", err.Error())
		return false
	}
	left := time.Duration(s.LeaseDuration) * time.Second
	d.mu.Lock()
	if d.cur.id == l.id {
		d.cur.expires = time.Now().Add(left)
	}
	d.mu.Unlock()
	return left > l.duration/2
}
