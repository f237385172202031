package metrics_test

import (
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentvoicebox/avb/platform/metrics"
)

// recorder is a Registerer that remembers the metric names it is given.
type recorder struct{ names map[string]bool }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return false }

// Every metric name the requirements list is registered (the realtime stream
// metrics take the place of the WebSocket ones).
func TestEveryRequiredMetricIsRegistered(t *testing.T) {
	t.Parallel()
	r := &recorder{names: map[string]bool{}}
	metrics.New(r)
	for _, name := range []string{
		"http_requests_total", "http_request_duration_seconds",
		"stream_connections", "stream_messages_total",
		"tenants_total", "sessions_total", "session_duration_seconds", "active_sessions",
		"stt_requests_total", "tts_requests_total", "llm_requests_total", "llm_tokens_total",
		"db_query_duration_seconds", "cache_hits_total", "temporal_workflows_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !r.names[name] {
			t.Errorf("metric %s is not registered", name)
		}
	}
}
