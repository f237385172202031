package testenv

import (
	"testing"
	"time"

	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
)

// AppDB migrates a fresh database as its owner and opens it as the avb_app
// role, the way the server runs; it returns the owner's URL too, for looking
// at rows past row-level security.
func AppDB(t testing.TB) (*store.DB, string) {
	t.Helper()
	owner := Postgres(t)
	cfg := config.Database{URL: owner, MaxConns: 4, ConnectTimeout: 5 * time.Second, MaxConnLifetime: time.Hour, MaxConnIdleTime: time.Minute}
	odb, err := store.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.MigrateUp(t.Context(), odb.Pool); err != nil {
		t.Fatal(err)
	}
	odb.Close()
	cfg.URL = AppURL(owner)
	db, err := store.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db, owner
}
