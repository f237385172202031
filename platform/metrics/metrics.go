// Package metrics defines every Prometheus collector the platform exposes at
// /metrics. The names follow the original requirements so dashboards and
// alert rules written against them keep working; the realtime stream metrics
// take the place of the old WebSocket ones.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the collectors. Build it once per process with New.
type Metrics struct {
	// HTTP and RPC traffic.
	HTTPRequests        *prometheus.CounterVec   // http_requests_total{method,route,code}
	HTTPRequestDuration *prometheus.HistogramVec // http_request_duration_seconds{method,route}
	RPCRequests         *prometheus.CounterVec   // rpc_requests_total{procedure,code}
	StreamConnections   *prometheus.GaugeVec     // stream_connections{procedure}
	StreamMessages      *prometheus.CounterVec   // stream_messages_total{procedure,direction}

	// Business.
	Tenants         prometheus.Gauge         // tenants_total
	Sessions        *prometheus.CounterVec   // sessions_total{status}
	SessionDuration prometheus.Histogram     // session_duration_seconds
	ActiveSessions  prometheus.Gauge         // active_sessions
	TurnLatency     *prometheus.HistogramVec // voice_turn_latency_seconds{stage}
	// Tools called during calls; kind and outcome are closed sets.
	ToolCalls        *prometheus.CounterVec   // tool_calls_total{kind,outcome}
	ToolCallDuration *prometheus.HistogramVec // tool_call_duration_seconds{kind}
	// Calls across instances.
	ForwardDuration prometheus.Histogram   // voice_forward_duration_seconds
	CallsMoved      *prometheus.CounterVec // voice_calls_moved_total{direction}

	// Phone calls (SIP), one observation per call at its end.
	PhoneJitter      prometheus.Histogram   // phone_jitter_seconds
	PhoneBufferDelay prometheus.Histogram   // phone_jitter_buffer_delay_seconds
	PhoneLoss        prometheus.Histogram   // phone_packet_loss_ratio
	PhoneLate        prometheus.Histogram   // phone_late_packet_ratio
	PhoneCalls       *prometheus.CounterVec // phone_calls_total{direction,outcome}

	// Speech and language providers.
	STTRequests *prometheus.CounterVec // stt_requests_total{provider,outcome}
	TTSRequests *prometheus.CounterVec // tts_requests_total{provider,outcome}
	LLMRequests *prometheus.CounterVec // llm_requests_total{provider,outcome}
	LLMTokens   *prometheus.CounterVec // llm_tokens_total{provider,direction}

	// Infrastructure.
	DBQueryDuration   *prometheus.HistogramVec // db_query_duration_seconds{operation}
	CacheHits         *prometheus.CounterVec   // cache_hits_total{cache}
	CacheMisses       *prometheus.CounterVec   // cache_misses_total{cache}
	TemporalWorkflows *prometheus.CounterVec   // temporal_workflows_total{workflow,outcome}
	DependencyUp      *prometheus.GaugeVec     // dependency_up{dependency}

	// Rate limits.
	RateLimitRejections *prometheus.CounterVec // rate_limit_rejections_total{tier}
	RateLimitLocal      prometheus.Gauge       // rate_limit_local

	// Billing.
	BillingEventsSent  prometheus.Counter     // billing_events_sent_total
	BillingSyncFailing prometheus.Gauge       // billing_sync_failing_tenants
	BillingSyncFailed  prometheus.Counter     // billing_sync_failures_total
	BillingAlerts      *prometheus.CounterVec // billing_alerts_total{metric,threshold}
	BillingWebhooks    *prometheus.CounterVec // billing_webhooks_total{outcome}
	QuotaRefusals      *prometheus.CounterVec // quota_refusals_total{metric}
}

// latencyBuckets suit request and voice latencies: 1 ms to 10 s.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// ratioBuckets suit shares of packets: 0.1% to 50%.
var ratioBuckets = []float64{.001, .005, .01, .02, .05, .1, .2, .5}

// New creates the collectors and registers them, with the Go and process
// collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP requests served, by method, route and status code.",
		}, []string{"method", "route", "code"}),
		HTTPRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "Time to serve an HTTP request (whole stream for streaming RPCs).", Buckets: latencyBuckets,
		}, []string{"method", "route"}),
		RPCRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rpc_requests_total", Help: "RPCs finished, by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		StreamConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "stream_connections", Help: "Open streaming RPCs (realtime calls, event subscriptions).",
		}, []string{"procedure"}),
		StreamMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stream_messages_total", Help: "Messages on streaming RPCs, by direction (in, out).",
		}, []string{"procedure", "direction"}),
		Tenants: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenants_total", Help: "Tenants on the platform.",
		}),
		Sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessions_total", Help: "Voice sessions ended, by final status.",
		}, []string{"status"}),
		SessionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "session_duration_seconds", Help: "Length of finished voice sessions.",
			Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400},
		}),
		ActiveSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "active_sessions", Help: "Voice sessions in progress on this instance.",
		}),
		TurnLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "voice_turn_latency_seconds", Help: "Per-turn latency from end of user speech to each stage (uninterrupted turns only).", Buckets: latencyBuckets,
		}, []string{"stage"}),
		ToolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tool_calls_total", Help: "Tool calls made by models during calls, by tool kind and outcome.",
		}, []string{"kind", "outcome"}),
		ToolCallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tool_call_duration_seconds", Help: "Time from a model's tool call to its result, by tool kind.", Buckets: latencyBuckets,
		}, []string{"kind"}),
		ForwardDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "voice_forward_duration_seconds", Help: "Browser-path requests forwarded to the instance holding their call: time of the hop.", Buckets: latencyBuckets,
		}),
		CallsMoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "voice_calls_moved_total", Help: "Calls told to move off this draining instance (out) and calls that rejoined a session here (in).",
		}, []string{"direction"}),
		PhoneJitter: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phone_jitter_seconds", Help: "Phone calls' RTP interarrival jitter (RFC 3550) at their end.", Buckets: latencyBuckets,
		}),
		PhoneBufferDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phone_jitter_buffer_delay_seconds", Help: "Phone calls' mean delay added by the jitter buffer.", Buckets: latencyBuckets,
		}),
		PhoneLoss: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phone_packet_loss_ratio", Help: "Phone calls' share of caller RTP packets lost.", Buckets: ratioBuckets,
		}),
		PhoneLate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "phone_late_packet_ratio", Help: "Phone calls' share of caller RTP packets that came after their time.", Buckets: ratioBuckets,
		}),
		PhoneCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phone_calls_total", Help: "SIP calls, by direction and outcome (answered, or the SIP status refusing them).",
		}, []string{"direction", "outcome"}),
		STTRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stt_requests_total", Help: "Speech-to-text requests, by provider and outcome.",
		}, []string{"provider", "outcome"}),
		TTSRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tts_requests_total", Help: "Text-to-speech requests, by provider and outcome.",
		}, []string{"provider", "outcome"}),
		LLMRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llm_requests_total", Help: "Language-model requests, by provider and outcome.",
		}, []string{"provider", "outcome"}),
		LLMTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llm_tokens_total", Help: "Language-model tokens, by provider and direction (input, output).",
		}, []string{"provider", "direction"}),
		DBQueryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "db_query_duration_seconds", Help: "Database query time, by operation.", Buckets: latencyBuckets,
		}, []string{"operation"}),
		CacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cache_hits_total", Help: "Cache hits, by cache.",
		}, []string{"cache"}),
		CacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cache_misses_total", Help: "Cache misses, by cache.",
		}, []string{"cache"}),
		TemporalWorkflows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "temporal_workflows_total", Help: "Temporal workflows started or finished, by workflow type and outcome.",
		}, []string{"workflow", "outcome"}),
		DependencyUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dependency_up", Help: "1 when the last readiness check of a dependency succeeded, else 0.",
		}, []string{"dependency"}),
		BillingEventsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "billing_events_sent_total", Help: "Usage events Lago accepted.",
		}),
		BillingSyncFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "billing_sync_failing_tenants", Help: "Tenants whose usage sync failed AVB_BILLING_SYNC_FAILING_AFTER times in a row or more, as of the last sync run.",
		}),
		BillingSyncFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "billing_sync_failures_total", Help: "Tenant usage syncs that failed (retried on the next run).",
		}),
		BillingAlerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "billing_alerts_total", Help: "Usage alerts fired, by quota metric and threshold percentage.",
		}, []string{"metric", "threshold"}),
		BillingWebhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "billing_webhooks_total", Help: "Lago webhooks received, by outcome (applied, duplicate, ignored, refused, failed).",
		}, []string{"outcome"}),
		QuotaRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quota_refusals_total", Help: "New sessions refused because a monthly quota was used up, by metric.",
		}, []string{"metric"}),
		RateLimitRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rate_limit_rejections_total", Help: "Requests refused by a rate limit, by tier (anonymous, user, admin, api_key).",
		}, []string{"tier"}),
		RateLimitLocal: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rate_limit_local", Help: "1 while this instance decides rate limits from its own buckets because Redis does not answer, else 0.",
		}),
	}
	reg.MustRegister(m.collectors()...)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.HTTPRequests, m.HTTPRequestDuration, m.RPCRequests, m.StreamConnections, m.StreamMessages,
		m.Tenants, m.Sessions, m.SessionDuration, m.ActiveSessions, m.TurnLatency, m.ToolCalls, m.ToolCallDuration,
		m.ForwardDuration, m.CallsMoved, m.PhoneJitter, m.PhoneBufferDelay, m.PhoneLoss, m.PhoneLate, m.PhoneCalls,
		m.STTRequests, m.TTSRequests, m.LLMRequests, m.LLMTokens,
		m.DBQueryDuration, m.CacheHits, m.CacheMisses, m.TemporalWorkflows, m.DependencyUp,
		m.RateLimitRejections, m.RateLimitLocal,
		m.BillingEventsSent, m.BillingSyncFailing, m.BillingSyncFailed, m.BillingAlerts, m.BillingWebhooks, m.QuotaRefusals,
	}
}
