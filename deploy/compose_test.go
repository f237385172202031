package deploy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/agentvoicebox/avb/platform/config"
)

// oneShots run to completion before what depends on them; they have no
// health to check.
var oneShots = []string{"migrate", "spicedb-migrate", "edge-certs"}

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  ".",
		ConfigFiles: []types.ConfigFile{{Filename: "compose.yaml"}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("avb", true) })
	if err != nil {
		t.Fatalf("compose.yaml does not load as Docker Compose loads it: %v", err)
	}
	return p
}

// compose.yaml loads with Docker Compose's own loader, has the platform's
// services, and each has a health check (the one-shots excepted), memory
// limits and reservations, and a restart policy; dependencies wait on
// health or on the one-shots' success; stateful services keep their data
// in named volumes; every file it mounts exists.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	want := []string{"avb", "avb-worker", "temporal", "temporal-ui", "vault", "postgres", "redis", "keycloak", "spicedb", "edge", "prometheus", "grafana"}
	for _, name := range want {
		if _, err := p.GetService(name); err != nil {
			t.Errorf("service %s missing", name)
		}
	}
	var limit, reserve int64
	for name, s := range p.Services {
		oneShot := slices.Contains(oneShots, name)
		if !oneShot && (s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0) {
			t.Errorf("%s has no health check", name)
		}
		if s.Restart == "" {
			t.Errorf("%s has no restart policy", name)
		}
		if s.Deploy == nil || s.Deploy.Resources.Limits == nil || s.Deploy.Resources.Limits.MemoryBytes == 0 ||
			s.Deploy.Resources.Reservations == nil || s.Deploy.Resources.Reservations.MemoryBytes == 0 {
			t.Errorf("%s has no memory limit and reservation", name)
			continue
		}
		limit += int64(s.Deploy.Resources.Limits.MemoryBytes)
		reserve += int64(s.Deploy.Resources.Reservations.MemoryBytes)
		for dep, d := range s.DependsOn {
			wantCond := types.ServiceConditionHealthy
			if slices.Contains(oneShots, dep) {
				wantCond = types.ServiceConditionCompletedSuccessfully
			}
			if d.Condition != wantCond {
				t.Errorf("%s waits on %s with %q, want %q", name, dep, d.Condition, wantCond)
			}
		}
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s mounts %s, which does not exist", name, v.Source)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s uses volume %s, which is not declared", name, v.Source)
				}
			}
		}
	}
	for _, name := range []string{"postgres", "redis", "prometheus", "grafana"} {
		s, _ := p.GetService(name)
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Type == types.VolumeTypeVolume }) {
			t.Errorf("stateful %s keeps no named volume", name)
		}
	}
	const gb = 1 << 30
	t.Logf("memory: limits %.1f GB, reservations %.1f GB", float64(limit)/gb, float64(reserve)/gb)
	if limit < 12*gb || limit > 18*gb {
		t.Errorf("memory limits add up to %.1f GB; the platform is sized for about 15 GB", float64(limit)/gb)
	}
	for _, name := range []string{"avb", "avb-worker"} {
		s, _ := p.GetService(name)
		if !s.ReadOnly {
			t.Errorf("%s's root filesystem is writable", name)
		}
		if s.StopGracePeriod == nil || *s.StopGracePeriod < types.Duration(40e9) {
			t.Errorf("%s's stop grace period does not cover avb's shutdown (30 s by default)", name)
		}
	}
}

// Every variable avb reads in production is set or has a default in the
// environment compose gives avb, its worker and the migration: each loads
// with avb's own configuration loader.
func TestComposeConfiguresAVB(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"avb", "avb-worker", "migrate"} {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if cfg.Profile != config.ProfileProd {
			t.Errorf("%s runs in profile %s", name, cfg.Profile)
		}
		for k := range env {
			if strings.HasPrefix(k, "AVB_") && !slices.ContainsFunc(config.Vars(cfg), func(v config.Var) bool { return v.Name == k }) {
				t.Errorf("%s sets %s, which avb does not read", name, k)
			}
		}
	}
	if _, err := os.Stat(filepath.Join("keycloak", "realm-avb.json")); err != nil {
		t.Fatal(err)
	}
}
