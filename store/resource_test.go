package store_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

func newTenant(t testing.TB, db *store.DB, tier string) context.Context {
	t.Helper()
	ten := &store.Tenant{Name: "T", Slug: "t-" + uuid.NewString()[:12], Tier: tier}
	if err := db.Tenants().Create(context.Background(), ten); err != nil {
		t.Fatal(err)
	}
	return tenancy.With(context.Background(), ten.ID)
}

// Every table holding tenant rows has row-level security with the
// tenant_isolation policy: a new table cannot forget the second wall. (A
// partition is reached only through its parent, whose policy applies.)
func TestEveryTenantTableHasRowLevelSecurity(t *testing.T) {
	t.Parallel()
	db := migratedApp(t)
	rows, err := db.Pool.Query(context.Background(), `
		SELECT c.relname, c.relrowsecurity, EXISTS (SELECT 1 FROM pg_policies p WHERE p.tablename = c.relname AND p.policyname = 'tenant_isolation')
		FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relnamespace = 'public'::regnamespace ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var name string
		var rls, policy bool
		if err := rows.Scan(&name, &rls, &policy); err != nil {
			t.Fatal(err)
		}
		n++
		if !rls || !policy {
			t.Errorf("table %s has tenant rows without row-level security (rls %v, policy %v)", name, rls, policy)
		}
	}
	if n < 15 {
		t.Fatalf("found only %d tenant tables", n)
	}
}

// Property: listing named resources page by page, in any order and page
// size, visits every row exactly once, in the order asked for.
func TestPropertyResourcePagingVisitsEachRowOnceInOrder(t *testing.T) {
	t.Parallel()
	db := migratedApp(t)
	rapid.Check(t, func(rt *rapid.T) {
		ctx := newTenant(t, db, store.TierEnterprise)
		names := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-zA-Z][a-z0-9 ]{0,6}`), 1, 25, strings.ToLower).Draw(rt, "names")
		for _, n := range names {
			if _, err := db.Resources(store.Personas).Create(ctx, &store.Resource{Name: n}); err != nil {
				rt.Fatal(err)
			}
		}
		order := store.Order(rapid.IntRange(0, 3).Draw(rt, "order"))
		size := rapid.IntRange(1, 7).Draw(rt, "size")
		var got []string
		token := ""
		for range 100 {
			page, next, err := db.Resources(store.Personas).List(ctx, store.ResourceQuery{Order: order, Size: size, Token: token})
			if err != nil {
				rt.Fatal(err)
			}
			for _, r := range page {
				got = append(got, r.Name)
			}
			if token = next; token == "" {
				break
			}
		}
		// The unpaged list is the reference order (names sort by the
		// database's collation); creation order is checked directly.
		all, _, err := db.Resources(store.Personas).List(ctx, store.ResourceQuery{Order: order, Size: 500})
		if err != nil {
			rt.Fatal(err)
		}
		var want []string
		for _, r := range all {
			want = append(want, r.Name)
		}
		switch order {
		case store.OldestFirst:
			want = names
		case store.NewestFirst:
			want = slices.Clone(names)
			slices.Reverse(want)
		}
		if !slices.Equal(got, want) {
			rt.Fatalf("order %v size %d: pages %v, want %v", order, size, got, want)
		}
		if !sameSet(got, names) {
			rt.Fatalf("pages %v are not the rows %v", got, names)
		}
	})
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestNotificationsInboxPerUser(t *testing.T) {
	t.Parallel()
	db := migratedApp(t)
	ctx := newTenant(t, db, store.TierPro)
	ann, err := db.Users().Upsert(ctx, &store.User{Subject: "ann-" + uuid.NewString()})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := db.Users().Upsert(ctx, &store.User{Subject: "bob-" + uuid.NewString()})
	if err != nil {
		t.Fatal(err)
	}
	key := "once"
	for _, n := range []*store.Notification{
		{Type: "tenant", Title: "for everyone"},
		{Type: "ann", Title: "for ann", UserID: &ann.ID},
		{Type: "bob", Title: "for bob", UserID: &bob.ID},
		{Type: "dedupe", Title: "once", DedupeKey: &key},
	} {
		if _, err := db.Notifications().Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if created, err := db.Notifications().Create(ctx, &store.Notification{Type: "dedupe", Title: "twice", DedupeKey: &key}); err != nil || created {
		t.Fatalf("a repeated dedupe key was stored again (%v, %v)", created, err)
	}
	list, _, unread, err := db.Notifications().List(ctx, ann.ID, false, 50, "")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, n := range list {
		types = append(types, n.Type)
	}
	if !slices.Equal(types, []string{"dedupe", "ann", "tenant"}) || unread != 3 {
		t.Fatalf("ann sees %v (%d unread)", types, unread)
	}
	// Marking bob's notification as ann does nothing; marking all clears ann's inbox only.
	bobs, _, _, _ := db.Notifications().List(ctx, bob.ID, false, 50, "")
	i := slices.IndexFunc(bobs, func(n store.Notification) bool { return n.Type == "bob" })
	if marked, _, err := db.Notifications().MarkRead(ctx, ann.ID, []uuid.UUID{bobs[i].ID}); err != nil || marked != 0 {
		t.Fatalf("ann marked bob's notification (%d, %v)", marked, err)
	}
	if marked, left, err := db.Notifications().MarkRead(ctx, ann.ID, nil); err != nil || marked != 3 || left != 0 {
		t.Fatalf("mark all: %d marked, %d left, %v", marked, left, err)
	}
	if marked, _, _ := db.Notifications().MarkRead(ctx, ann.ID, nil); marked != 0 {
		t.Fatal("marking again counted again")
	}
	if _, _, unread, _ := db.Notifications().List(ctx, bob.ID, true, 50, ""); unread != 3 {
		t.Fatalf("bob has %d unread, want 3", unread)
	}
}
