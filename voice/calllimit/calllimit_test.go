package calllimit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/voice/calllimit"
)

// A session's call that moves to another instance takes its slot over,
// even at the tenant's cap; the old instance can no longer free it.
func TestTakeOverAtTheCap(t *testing.T) {
	ctx := context.Background()
	l := calllimit.New(testenv.RedisClient(t), 2)
	tenant := uuid.NewString()
	a, b := uuid.NewString(), uuid.NewString()
	releaseA, err := l.Acquire(ctx, tenant, a, "http://one#1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, tenant, b, "http://one#2"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, tenant, uuid.NewString(), "http://one#3"); !errors.Is(err, calllimit.ErrLimit) {
		t.Fatalf("a third call at a cap of two: %v", err)
	}
	// Session a rejoins on instance two.
	releaseA2, err := l.Acquire(ctx, tenant, a, "http://two#4")
	if err != nil {
		t.Fatalf("take over at the cap: %v", err)
	}
	if h, _ := l.Holder(ctx, tenant, a); h != "http://two#4" {
		t.Fatalf("holder %q", h)
	}
	releaseA() // the old instance lets go late: the slot stays with two
	if held, _ := l.Held(ctx, tenant, a); !held {
		t.Fatal("the old holder's release freed the new holder's slot")
	}
	releaseA2()
	if held, _ := l.Held(ctx, tenant, a); held {
		t.Fatal("released slot still held")
	}
	if _, err := l.Acquire(ctx, tenant, uuid.NewString(), "http://one#5"); err != nil {
		t.Fatalf("room after the release: %v", err)
	}
}

// Whatever the order of takes, take-overs and releases, a tenant never
// holds more slots than its cap, and every held slot names its last taker.
func TestSlotsNeverExceedTheCap(t *testing.T) {
	rdb := testenv.RedisClient(t)
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		capacity := rapid.IntRange(1, 3).Draw(t, "cap")
		l := calllimit.New(rdb, capacity)
		tenant := uuid.NewString()
		sessions := []string{uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()}
		type grant struct {
			holder  string
			release func()
		}
		grants := map[string][]grant{} // session -> its grants, oldest first
		owner := map[string]string{}   // session -> who should hold it
		for i := range rapid.IntRange(1, 30).Draw(t, "steps") {
			s := rapid.SampledFrom(sessions).Draw(t, "session")
			if rapid.Bool().Draw(t, "take") {
				holder := uuid.NewString()
				release, err := l.Acquire(ctx, tenant, s, holder)
				switch {
				case err == nil:
					grants[s] = append(grants[s], grant{holder, release})
					owner[s] = holder
				case errors.Is(err, calllimit.ErrLimit):
					if owner[s] != "" || len(owner) < capacity {
						t.Fatalf("step %d: refused with %d of %d held (session held: %v)", i, len(owner), capacity, owner[s] != "")
					}
				default:
					t.Fatal(err)
				}
			} else if g := grants[s]; len(g) > 0 {
				k := rapid.IntRange(0, len(g)-1).Draw(t, "grant")
				g[k].release()
				if g[k].holder == owner[s] {
					delete(owner, s)
				}
				grants[s] = append(g[:k:k], g[k+1:]...)
			}
			if len(owner) > capacity {
				t.Fatalf("step %d: %d slots held, cap %d", i, len(owner), capacity)
			}
			for _, s := range sessions {
				if h, err := l.Holder(ctx, tenant, s); err != nil || h != owner[s] {
					t.Fatalf("step %d: holder %q (%v), want %q", i, h, err, owner[s])
				}
			}
		}
	})
}
