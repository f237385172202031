package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/agentvoicebox/avb/platform/metrics"
)

// dependencyMetrics are the metrics of avb's dependencies the dashboards
// and alerts use: Prometheus's own up, Temporal's matching service
// backlog, SpiceDB's gRPC server metrics.
var dependencyMetrics = map[string]bool{
	"up":                        true,
	"approximate_backlog_count": true,
	"grpc_server_handled_total": true,
}

// recorder is a Registerer that keeps what avb registers.
type recorder struct{ cs []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error   { r.cs = append(r.cs, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }
func (r *recorder) Unregister(prometheus.Collector) bool    { return false }

var fqName = regexp.MustCompile(`fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)"`)

// avbMetrics is every series name avb (server and worker) exports, from the
// descriptions of the collectors it registers, histograms with their
// _bucket, _sum and _count series.
func avbMetrics(t *testing.T) map[string]bool {
	t.Helper()
	r := &recorder{}
	metrics.New(r)
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc, 1024)
	for _, c := range r.cs {
		c.Describe(ch)
	}
	close(ch)
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		for _, suffix := range []string{"", "_bucket", "_sum", "_count", "_total"} {
			names[m[1]+suffix] = true
		}
	}
	if !names["voice_turn_latency_seconds_bucket"] || !names["process_resident_memory_bytes"] {
		t.Fatalf("avb's metrics not found: %d names", len(names))
	}
	return names
}

// metricNames parses a PromQL expression and returns the metric names it
// selects.
func metricNames(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	var out []string
	for _, vs := range parser.ExtractSelectors(e) {
		for _, m := range vs {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				out = append(out, m.Value)
			}
		}
	}
	if len(out) == 0 {
		t.Errorf("%s: %q selects no metric by name", where, expr)
	}
	return out
}

// Every dashboard panel's query parses with Prometheus's parser and names
// only metrics avb or its dependencies export; the dashboards use the
// provisioned datasource, and the four dashboards are there.
func TestDashboardQueries(t *testing.T) {
	known := avbMetrics(t)
	files, _ := filepath.Glob("grafana/provisioning/dashboards/avb/*.json")
	if len(files) < 4 {
		t.Fatalf("%d dashboards", len(files))
	}
	var ds struct {
		Datasources []struct{ UID string } `yaml:"datasources"`
	}
	raw, err := os.ReadFile("grafana/provisioning/datasources/prometheus.yaml")
	if err != nil || yaml.Unmarshal(raw, &ds) != nil || len(ds.Datasources) != 1 {
		t.Fatalf("datasource provisioning: %v", err)
	}
	queries := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Panels []struct {
				Title      string `json:"title"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(raw, &d); err != nil || d.UID == "" {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			if p.Datasource.UID != ds.Datasources[0].UID {
				t.Errorf("%s / %s uses datasource %q", f, p.Title, p.Datasource.UID)
			}
			for _, tg := range p.Targets {
				queries++
				for _, name := range metricNames(t, f+" / "+p.Title, tg.Expr) {
					if !known[name] && !dependencyMetrics[name] {
						t.Errorf("%s / %s: no one exports %s", f, p.Title, name)
					}
				}
			}
		}
	}
	t.Logf("%d dashboards, %d queries", len(files), queries)
}

// The alert rules name only metrics avb or its dependencies export.
func TestAlertMetricsExist(t *testing.T) {
	known := avbMetrics(t)
	raw, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, name := range metricNames(t, r.Alert, strings.TrimSpace(r.Expr)) {
				if !known[name] && !dependencyMetrics[name] {
					t.Errorf("alert %s: no one exports %s", r.Alert, name)
				}
			}
		}
	}
}
