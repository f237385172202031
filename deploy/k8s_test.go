package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/server"
)

// typed returns the k8s.io/api type of a kind, to decode it strictly.
func typed(kind string) any {
	switch kind {
	case "Deployment":
		return &appsv1.Deployment{}
	case "Service":
		return &corev1.Service{}
	case "ServiceAccount":
		return &corev1.ServiceAccount{}
	case "ConfigMap":
		return &corev1.ConfigMap{}
	case "Job":
		return &batchv1.Job{}
	case "HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "Ingress":
		return &networkingv1.Ingress{}
	case "NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "Kustomization":
		return &kusttypes.Kustomization{}
	}
	return nil
}

// decodeStrict decodes every document of a YAML stream into its type;
// an unknown kind or an unknown field fails.
func decodeStrict(t *testing.T, name string, stream []byte) []any {
	t.Helper()
	var out []any
	for _, doc := range bytes.Split(stream, []byte("\n---")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var head struct{ Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		obj := typed(head.Kind)
		if obj == nil {
			t.Errorf("%s: kind %q is not one avb ships", name, head.Kind)
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Errorf("%s: %s does not decode strictly: %v", name, head.Kind, err)
			continue
		}
		out = append(out, obj)
	}
	return out
}

// Every file under k8s/ decodes strictly into its k8s.io/api (or
// kustomize) type.
func TestKubernetesFilesDecodeStrictly(t *testing.T) {
	n := 0
	err := filepath.WalkDir("k8s", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n += len(decodeStrict(t, path, raw))
		return nil
	})
	if err != nil || n < 15 {
		t.Fatalf("%d objects: %v", n, err)
	}
}

// build runs kustomize on a directory of k8s/ and decodes what it makes.
func build(t *testing.T, dir string) []any {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("k8s", dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	raw, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeStrict(t, "kustomize build "+dir, raw)
}

// The prod overlay builds, and what it makes is safe to run: non-root, a
// read-only root filesystem, no service account token, resources, probes,
// the pinned image, the namespace, Vault's AppRole for every avb process.
func TestKustomizeBuildsTheOverlay(t *testing.T) {
	build(t, "base")
	objs := build(t, "overlays/prod")
	var pods []struct {
		name string
		spec corev1.PodSpec
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			if o.Namespace != "avb" {
				t.Errorf("%s in namespace %q", o.Name, o.Namespace)
			}
			pods = append(pods, struct {
				name string
				spec corev1.PodSpec
			}{o.Name, o.Spec.Template.Spec})
		case *batchv1.Job:
			pods = append(pods, struct {
				name string
				spec corev1.PodSpec
			}{o.Name, o.Spec.Template.Spec})
		}
	}
	if len(pods) != 3 {
		t.Fatalf("%d workloads, want the API, the worker and the migration", len(pods))
	}
	for _, p := range pods {
		s := p.spec
		if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
			t.Errorf("%s mounts a service account token", p.name)
		}
		if s.SecurityContext == nil || s.SecurityContext.RunAsNonRoot == nil || !*s.SecurityContext.RunAsNonRoot ||
			s.SecurityContext.RunAsUser == nil || *s.SecurityContext.RunAsUser != 10001 {
			t.Errorf("%s does not run as the image's non-root user", p.name)
		}
		c := s.Containers[0]
		if c.Image != "ghcr.io/agentvoicebox/avb:v1.0.0" {
			t.Errorf("%s runs image %s", p.name, c.Image)
		}
		if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem ||
			c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
			t.Errorf("%s: writable root filesystem or privilege escalation", p.name)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s has no memory request and limit", p.name)
		}
		if !hasMount(c, "/var/run/secrets/avb") {
			t.Errorf("%s has no Vault AppRole secret id mounted", p.name)
		}
		if p.name != "avb-migrate" && (c.LivenessProbe == nil || c.ReadinessProbe == nil || c.StartupProbe == nil) {
			t.Errorf("%s lacks a probe", p.name)
		}
	}
}

func hasMount(c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return true
		}
	}
	return false
}

// The probes ask what avb serves, on the port it listens on, and the grace
// period covers the preStop pause and avb's own shutdown.
func TestProbesAndGraceMatchAVB(t *testing.T) {
	objs := build(t, "overlays/prod")
	var cm *corev1.ConfigMap
	deployments := map[string]*appsv1.Deployment{}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			cm = o
		case *appsv1.Deployment:
			deployments[o.Name] = o
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap")
	}
	env := map[string]string{}
	for k, v := range cm.Data {
		env[k] = v
	}
	// What avb-secrets and the AppRole mount would add.
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	env["AVB_VAULT_SECRET_ID_FILE"], env["AVB_VAULT_ROLE_ID"], env["AVB_SPICEDB_TOKEN"] = secretFile, "role", "token"
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the ConfigMap is not a valid avb configuration: %v", err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	api := server.New(server.Options{HTTP: cfg.HTTP, Logger: slog.New(slog.DiscardHandler), Metrics: m, Gatherer: reg,
		Readiness: server.NewReadiness(nil, time.Second, slog.New(slog.DiscardHandler), m)}).Handler()
	for name, c := range map[string]struct {
		handler http.Handler
		addr    string
	}{"avb-api": {api, cfg.HTTP.Addr}, "avb-worker": {server.WorkerHandler(reg), cfg.Worker.Addr}} {
		d := deployments[name]
		if d == nil {
			t.Fatalf("no Deployment %s", name)
		}
		ctr := d.Spec.Template.Spec.Containers[0]
		_, port, _ := net.SplitHostPort(c.addr)
		for kind, p := range map[string]*corev1.Probe{"startup": ctr.StartupProbe, "liveness": ctr.LivenessProbe, "readiness": ctr.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s: no %s HTTP probe", name, kind)
				continue
			}
			if got := containerPort(ctr, p.HTTPGet.Port.String()); fmt.Sprint(got) != port {
				t.Errorf("%s: %s probe on port %v, avb listens on %s", name, kind, got, port)
			}
			rec := httptest.NewRecorder()
			c.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.HTTPGet.Path, nil))
			if rec.Code != http.StatusOK {
				t.Errorf("%s: %s probe GET %s answers %d", name, kind, p.HTTPGet.Path, rec.Code)
			}
		}
		grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		pause := preStopPause(ctr)
		if need := pause + cfg.HTTP.ShutdownTimeout; grace <= need {
			t.Errorf("%s: grace period %s does not cover the preStop pause %s and AVB_SHUTDOWN_TIMEOUT %s", name, grace, pause, cfg.HTTP.ShutdownTimeout)
		}
		if cfg.HTTP.StreamDrainTimeout >= cfg.HTTP.ShutdownTimeout {
			t.Errorf("streams drain (%s) after the shutdown deadline (%s)", cfg.HTTP.StreamDrainTimeout, cfg.HTTP.ShutdownTimeout)
		}
	}
}

// containerPort resolves a probe's port (a number or a port name).
func containerPort(c corev1.Container, port string) int32 {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return 0
}

func preStopPause(c corev1.Container) time.Duration {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		return 0
	}
	cmd := c.Lifecycle.PreStop.Exec.Command
	if len(cmd) == 2 && cmd[0] == "sleep" {
		d, _ := time.ParseDuration(cmd[1] + "s")
		return d
	}
	return 0
}
