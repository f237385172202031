package deploy

import (
	"os/exec"
	"testing"
)

// The Prometheus configuration and alert rules pass promtool's checks, and
// the alerts' unit tests (prometheus/alerts_test.yml) pass. promtool is in
// Debian's prometheus package.
func TestPrometheusConfigAndAlerts(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: run  apt-get install -y prometheus")
	}
	for _, args := range [][]string{
		{"check", "config", "prometheus/prometheus.yml"},
		{"check", "rules", "prometheus/alerts.yml"},
		{"test", "rules", "prometheus/alerts_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
