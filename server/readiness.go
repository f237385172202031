package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvoicebox/avb/platform/dependency"
	"github.com/agentvoicebox/avb/platform/metrics"
)

// Dependency is one thing the server needs to serve traffic.
type Dependency struct {
	// Name appears in the readiness report: postgres, redis, temporal, spicedb.
	Name string
	// Required dependencies make the server unready when they are down.
	Required bool
	// Probe returns nil when the dependency answers.
	Probe func(context.Context) error
	// Guard, when set, is told when the probe finds the dependency down, so
	// calls to it fail fast at once; its state shows in the report.
	Guard *dependency.Guard
}

// Readiness checks the dependencies for GET /health/ready/ and the gRPC
// health service. Concurrent callers share one round of checks, and a round
// is reused for minInterval, so probes cannot be used to load the backends.
type Readiness struct {
	deps     []Dependency
	timeout  time.Duration
	log      *slog.Logger
	metrics  *metrics.Metrics
	draining atomic.Bool
	// drainStarted is closed when draining begins.
	drainStarted chan struct{}
	drainOnce    sync.Once

	mu   sync.Mutex
	last Report
	at   time.Time
	// down remembers which dependencies the last probe found down, so a
	// change is logged once, not every probe.
	down sync.Map
	// degraded names the features running in a degraded mode, and says how
	// ("" while they are not).
	degraded map[string]func() string
}

// Degraded adds a feature to the report's "degraded" section: detail says
// how the feature runs while a dependency is missing ("" when it runs normally).
func (r *Readiness) Degraded(feature string, detail func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.degraded == nil {
		r.degraded = map[string]func() string{}
	}
	r.degraded[feature] = detail
}

// minInterval is how long a readiness round is reused.
const minInterval = 250 * time.Millisecond

// NewReadiness returns a checker of deps, each probed with timeout.
func NewReadiness(deps []Dependency, timeout time.Duration, log *slog.Logger, m *metrics.Metrics) *Readiness {
	return &Readiness{deps: deps, timeout: timeout, log: log, metrics: m, drainStarted: make(chan struct{})}
}

// Report is the readiness body.
type Report struct {
	// Status is "ready", "not_ready" or "draining".
	Status string                 `json:"status"`
	Checks map[string]CheckResult `json:"checks"`
	// Degraded lists the features that run in a degraded mode (rate limits
	// decided per instance while Redis is down), and how.
	Degraded map[string]string `json:"degraded,omitempty"`
}

// CheckResult is one dependency's state.
type CheckResult struct {
	Status    string  `json:"status"` // "up" or "down"
	Required  bool    `json:"required"`
	LatencyMS float64 `json:"latency_ms"`
	// Error is "timeout" or "unreachable"; details go to the server log only.
	Error string `json:"error,omitempty"`
	// Breaker is the state of the dependency's circuit breaker: "closed"
	// (calls pass), "open" (calls fail fast) or "half-open" (one probe call).
	Breaker string `json:"breaker,omitempty"`
}

// Ready reports whether the last Check found every required dependency up.
func (r Report) Ready() bool { return r.Status == "ready" }

// SetDraining marks the server as shutting down: readiness fails from now on,
// so load balancers stop sending new work.
func (r *Readiness) SetDraining() {
	r.draining.Store(true)
	r.drainOnce.Do(func() { close(r.drainStarted) })
}

// DrainStarted is closed when the server begins to drain: live calls are
// told to move.
func (r *Readiness) DrainStarted() <-chan struct{} { return r.drainStarted }

// Check probes every dependency concurrently (or reuses a fresh round).
func (r *Readiness) Check(ctx context.Context) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.at) < minInterval && r.last.Checks != nil {
		return r.withDrain(r.withDegraded(r.last))
	}
	results := make([]CheckResult, len(r.deps))
	var wg sync.WaitGroup
	for i, d := range r.deps {
		wg.Go(func() { results[i] = r.probe(ctx, d) })
	}
	wg.Wait()
	rep := Report{Status: "ready", Checks: make(map[string]CheckResult, len(r.deps))}
	for i, d := range r.deps {
		rep.Checks[d.Name] = results[i]
		if results[i].Status != "up" && d.Required {
			rep.Status = "not_ready"
		}
	}
	r.last, r.at = rep, time.Now()
	return r.withDrain(r.withDegraded(rep))
}

func (r *Readiness) withDegraded(rep Report) Report {
	rep.Degraded = nil
	for feature, detail := range r.degraded {
		if d := detail(); d != "" {
			if rep.Degraded == nil {
				rep.Degraded = map[string]string{}
			}
			rep.Degraded[feature] = d
		}
	}
	return rep
}

func (r *Readiness) withDrain(rep Report) Report {
	if r.draining.Load() {
		rep.Status = "draining"
	}
	return rep
}

func (r *Readiness) probe(ctx context.Context, d Dependency) CheckResult {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	err := d.Probe(ctx)
	res := CheckResult{Status: "up", Required: d.Required, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
	up := 1.0
	if err != nil {
		up = 0
		res.Status, res.Error = "down", "unreachable"
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			res.Error = "timeout"
		}
		if d.Guard != nil {
			d.Guard.Down()
		}
	}
	if _, was := r.down.Load(d.Name); was != (err != nil) {
		if err != nil {
			r.down.Store(d.Name, true)
			r.log.WarnContext(ctx, "dependency down", "dependency", d.Name, "error", err.Error())
		} else {
			r.down.Delete(d.Name)
			r.log.InfoContext(ctx, "dependency up", "dependency", d.Name)
		}
	}
	if d.Guard != nil {
		res.Breaker = d.Guard.State()
	}
	if r.metrics != nil {
		r.metrics.DependencyUp.WithLabelValues(d.Name).Set(up)
	}
	return res
}

// ServeHTTP answers GET /health/ready/: 200 when ready, 503 otherwise, with
// the report as JSON either way.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rep := r.Check(req.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !rep.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}
