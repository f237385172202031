package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// TenantSecret is one of a tenant's own secrets, as a Vault Transit
// ciphertext ("vault:v<version>:...").
type TenantSecret struct {
	bun.BaseModel `bun:"table:tenant_secrets"`

	TenantID   uuid.UUID `bun:"tenant_id,type:uuid,pk"`
	Name       string    `bun:"name,pk"`
	Ciphertext string    `bun:"ciphertext"`
	KeyVersion int       `bun:"key_version"`
	CreatedAt  time.Time `bun:"created_at,nullzero,default:now()"`
	UpdatedAt  time.Time `bun:"updated_at,nullzero,default:now()"`
}

// TenantSecrets is the tenant secret repository, scoped to the tenant in ctx.
type TenantSecrets struct{ db *DB }

// TenantSecrets returns the tenant secret repository.
func (db *DB) TenantSecrets() TenantSecrets { return TenantSecrets{db} }

// Put stores a secret, replacing the one of the same name.
func (r TenantSecrets) Put(ctx context.Context, name, ciphertext string, keyVersion int) (*TenantSecret, error) {
	s := &TenantSecret{Name: name, Ciphertext: ciphertext, KeyVersion: keyVersion}
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewRaw(`INSERT INTO tenant_secrets (name, ciphertext, key_version) VALUES (?, ?, ?)
			ON CONFLICT (tenant_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, key_version = excluded.key_version, updated_at = now()
			RETURNING tenant_id, name, key_version, created_at, updated_at`, name, ciphertext, keyVersion).Scan(ctx, s)
	})
	if err != nil {
		return nil, mapWriteErr(err)
	}
	return s, nil
}

// PreviousSuffix names where Rotate keeps the secret it replaced.
const PreviousSuffix = "_previous"

// Rotate stores a new value of a secret and keeps the one it replaces as
// name+PreviousSuffix (its updated_at is when it was replaced), dropping
// any older one: a receiver has the grace period to switch over.
func (r TenantSecrets) Rotate(ctx context.Context, name, ciphertext string, keyVersion int) (*TenantSecret, error) {
	s := &TenantSecret{Name: name, Ciphertext: ciphertext, KeyVersion: keyVersion}
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewRaw(`DELETE FROM tenant_secrets WHERE name = ?`, name+PreviousSuffix).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewRaw(`UPDATE tenant_secrets SET name = ?, updated_at = now() WHERE name = ?`, name+PreviousSuffix, name).Exec(ctx); err != nil {
			return err
		}
		return tx.NewRaw(`INSERT INTO tenant_secrets (name, ciphertext, key_version) VALUES (?, ?, ?)
			RETURNING tenant_id, name, key_version, created_at, updated_at`, name, ciphertext, keyVersion).Scan(ctx, s)
	})
	if err != nil {
		return nil, mapWriteErr(err)
	}
	return s, nil
}

// Get returns a secret (ErrNotFound when the tenant has not set it).
func (r TenantSecrets) Get(ctx context.Context, name string) (*TenantSecret, error) {
	s := new(TenantSecret)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(s).Where("name = ?", name).Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// List returns the tenant's secrets, by name.
func (r TenantSecrets) List(ctx context.Context) ([]TenantSecret, error) {
	var out []TenantSecret
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&out).Order("name").Scan(ctx)
	})
	return out, err
}

// Delete removes a secret (ErrNotFound if not set).
func (r TenantSecrets) Delete(ctx context.Context, name string) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewDelete().Model((*TenantSecret)(nil)).Where("name = ?", name).Exec(ctx)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// Rewrap replaces the tenant's secrets below key version with what rewrap
// returns for each (the same secret under the newest key). rewrap runs
// outside any transaction (it calls Vault); each result is written only if
// the row still holds the ciphertext it was made from, so a secret changed
// meanwhile is left as it is now. It returns how many it rewrapped.
func (r TenantSecrets) Rewrap(ctx context.Context, below int, rewrap func(ciphertext string) (string, int, error)) (int, error) {
	var old []TenantSecret
	if err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&old).Where("key_version < ?", below).Scan(ctx)
	}); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range old {
		c, v, err := rewrap(s.Ciphertext)
		if err != nil {
			return n, err
		}
		err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
			res, err := tx.NewUpdate().Model((*TenantSecret)(nil)).Set("ciphertext = ?, key_version = ?", c, v).
				Where("name = ? AND ciphertext = ?", s.Name, s.Ciphertext).Exec(ctx)
			if err == nil {
				if k, _ := res.RowsAffected(); k > 0 {
					n++
				}
			}
			return err
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TenantsToRewrap lists the tenants with a secret below key version.
func (db *DB) TenantsToRewrap(ctx context.Context, below int) ([]uuid.UUID, error) {
	var out []uuid.UUID
	err := db.do(ctx, func(ctx context.Context) error {
		out = out[:0]
		return db.Bun.NewRaw("SELECT * FROM tenant_secrets_to_rewrap(?)", below).Scan(ctx, &out)
	})
	return out, err
}
