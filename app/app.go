// Package app is the composition root: it builds every component from the
// configuration and runs the API server. cmd/avb calls it; integration tests
// call it the same way.
package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/authz"
	"github.com/agentvoicebox/avb/billing"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/gen/openapi"
	"github.com/agentvoicebox/avb/platform/cache"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/dependency"
	"github.com/agentvoicebox/avb/platform/egress"
	"github.com/agentvoicebox/avb/platform/events"
	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/platform/metrics"
	"github.com/agentvoicebox/avb/platform/probe"
	"github.com/agentvoicebox/avb/platform/ratelimit"
	"github.com/agentvoicebox/avb/platform/secret"
	"github.com/agentvoicebox/avb/server"
	"github.com/agentvoicebox/avb/server/limits"
	"github.com/agentvoicebox/avb/server/middleware"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/telephony"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/calllimit"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tools"
	"github.com/agentvoicebox/avb/voice/tts"
	"github.com/agentvoicebox/avb/web"
	"github.com/agentvoicebox/avb/workflows"
)

// Version is the build version, set with -ldflags "-X .../app.Version=v1.2.3".
var Version = "dev"

// temporalHealthService is the service name Temporal's frontend reports health for.
const temporalHealthService = "temporal.api.workflowservice.v1.WorkflowService"

// App is a running set of components.
type App struct {
	cfg       *config.Config
	readiness *server.Readiness
	// advertised is how the other instances reach this one (a string),
	// once it listens.
	advertised atomic.Value
	// ttsPool runs espeak-ng in worker processes (nil: in process).
	ttsPool *tts.Pool
	// sip is the phone endpoint (nil without AVB_SIP_ADDR); sipAddr its
	// bound address once it listens.
	sip      *telephony.Server
	sipAddr  atomic.Value
	registry *prometheus.Registry
	log      *slog.Logger
	db       *store.DB
	redis    *redis.Client
	// redisProbe is a one-connection client without the breaker, for readiness.
	redisProbe *redis.Client
	probes     []*probe.GRPCHealth
	server     *server.Server
	bus        *invalidation.Bus
	usage      *authn.Usage
	issuer     *authn.DevIssuer
	oidc       *authn.OIDC
	sessions   *authn.TokenSessions
	spicedb    *authz.Client
	grants     *authz.Grants
	decider    authz.Decider

	temporal client.Client
	billing  *Billing
	reporter *workflows.Reporter
	workers  workflows.Workers
	runCtx   context.Context // lives until Close

	clientTokens *authn.ClientTokens
	secrets      *Secrets
	stop         context.CancelFunc
	limiter      *ratelimit.Limiter
	tenants      *authn.Tenants

	schemaWritten atomic.Bool
	Metrics       *metrics.Metrics
	// deps holds the deadline and breaker of each dependency.
	deps *dependency.Set
}

// pingRedis is the readiness probe of Redis. It bypasses the breaker (a
// probe must reach Redis to see it is back) by using its own client.
func (a *App) pingRedis(ctx context.Context) error {
	return a.redisProbe.Ping(ctx).Err()
}

// observeCache counts a cache read in cache_hits_total or cache_misses_total.
func (a *App) observeCache(name string, hit bool) {
	if hit {
		a.Metrics.CacheHits.WithLabelValues(name).Inc()
	} else {
		a.Metrics.CacheMisses.WithLabelValues(name).Inc()
	}
}

// counted makes an in-process cache count its reads under name.
func counted[V any](a *App, name string, c *invalidation.Cache[V]) *invalidation.Cache[V] {
	c.Observe = func(hit bool) { a.observeCache(name, hit) }
	return c
}

// Redis is the application's Redis client (under its guard).
func (a *App) Redis() *redis.Client { return a.redis }

// Dependencies returns the guards of the dependencies (tests read their state).
func (a *App) Dependencies() *dependency.Set { return a.deps }

// Option changes how New builds the App.
type Option func(*App)

// WithDecider replaces the SpiceDB authorization decider (benchmarks use it
// to measure what authorization adds).
func WithDecider(d authz.Decider) Option { return func(a *App) { a.decider = d } }

// New builds the components. It does not wait for the dependencies: they are
// reported by readiness until they answer.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (*App, error) {
	a := &App{cfg: cfg, log: log}
	for _, o := range opts {
		o(a)
	}
	reg := prometheus.NewRegistry()
	a.registry = reg
	a.Metrics = metrics.New(reg)
	a.deps = dependency.NewSet(dependency.Breaker{OpenFor: cfg.Breaker.OpenFor, Failures: cfg.Breaker.Failures}, log, reg)

	if cfg.Database.MigrateOnStart {
		if err := Migrate(ctx, cfg.Database, log); err != nil {
			return nil, err
		}
	}
	// With Vault, the secrets and the database credentials come from it
	// (after the migrations: a leased user is a member of their avb_app).
	secrets, err := OpenSecrets(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	a.secrets = secrets
	db, err := store.Open(ctx, cfg.Database, append(secrets.StoreOptions(), store.ObserveQueries(func(op string, d time.Duration) {
		a.Metrics.DBQueryDuration.WithLabelValues(op).Observe(d.Seconds())
	}))...)
	if err != nil {
		return nil, err
	}
	a.db = db
	db.Guard(a.deps.Guard("postgres"), cfg.Database)
	if err := db.CheckRole(ctx); err != nil {
		if errors.Is(err, store.ErrBypassesRLS) {
			db.Close()
			return nil, err
		}
		log.Warn("database not reachable yet; readiness reports it", "error", err.Error())
	}

	redisOpts, err := redis.ParseURL(cfg.Redis.URL)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	redisOpts.DialTimeout = cfg.Redis.DialTimeout
	redisOpts.ReadTimeout, redisOpts.WriteTimeout = cfg.Redis.CommandTimeout, cfg.Redis.CommandTimeout
	redisOpts.PoolTimeout = cfg.Redis.CommandTimeout
	redisOpts.ContextTimeoutEnabled = true
	probeOpts := *redisOpts
	probeOpts.PoolSize, probeOpts.MinIdleConns = 1, 0
	a.redisProbe = redis.NewClient(&probeOpts)
	a.redis = redis.NewClient(redisOpts)
	redisGuard := a.deps.Guard("redis")
	redisGuard.IsFailure = dependency.IsRedisFailure
	a.redis.AddHook(redisGuard.RedisHook(cfg.Redis.CommandTimeout))
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.stop, a.runCtx = stop, runCtx
	go secrets.Run(runCtx, db)
	a.bus = invalidation.New(a.redis, log)
	go a.bus.Run(runCtx)
	rows := cache.New(a.redis, cfg.Redis.CacheTTL, log)
	rows.Observe = func(kind string, hit bool) { a.observeCache(kind, hit) }
	db.CacheRows(rows)

	temporal, err := probe.NewGRPCHealth(cfg.Temporal.Address, temporalHealthService)
	if err != nil {
		a.Close()
		return nil, err
	}
	spicedb, err := probe.NewGRPCHealth(cfg.SpiceDB.Endpoint, "")
	if err != nil {
		a.Close()
		return nil, err
	}
	a.probes = []*probe.GRPCHealth{temporal, spicedb}

	required := func(name string) bool { return !slices.Contains(cfg.Readiness.Optional, name) }
	readiness := server.NewReadiness([]server.Dependency{
		{Name: "postgres", Required: required("postgres"), Probe: db.Ping, Guard: a.deps.Guard("postgres")},
		{Name: "redis", Required: required("redis"), Probe: a.pingRedis, Guard: a.deps.Guard("redis")},
		{Name: "temporal", Required: required("temporal"), Probe: temporal.Check, Guard: a.deps.Guard("temporal")},
		{Name: "spicedb", Required: required("spicedb"), Probe: spicedb.Check, Guard: a.deps.Guard("spicedb")},
	}, cfg.Readiness.Timeout, log, a.Metrics)

	a.readiness = readiness
	readiness.Degraded("secrets", secrets.Degraded)
	a.billing, err = NewBilling(cfg.Billing, secrets, db, a.deps, events.Hub{Redis: a.redis}, a.Metrics, log)
	if err != nil {
		a.Close()
		return nil, err
	}
	interceptors, identity, err := a.identity(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	identity.BillingChanged = a.billingChanged
	identity.Sealer = a.secrets.Sealer()
	if identity.Tools, err = a.tools(cfg); err != nil {
		a.Close()
		return nil, err
	}
	readiness.Degraded("rate_limits", func() string {
		if a.limiter.Local() {
			return "decided by each instance on its own: Redis does not answer"
		}
		return ""
	})
	a.server = server.New(server.Options{
		HTTP:         cfg.HTTP,
		Logger:       log,
		Metrics:      a.Metrics,
		Gatherer:     reg,
		Readiness:    readiness,
		Interceptors: interceptors,
		// A certificate from Vault's PKI, renewed while serving.
		GetCertificate: secrets.GetCertificate(),
	})
	if a.issuer != nil {
		a.server.HandleHTTP(issuerPath(cfg.Auth.OIDCIssuerURL), a.issuer.Handler())
		if u, err := url.Parse(cfg.Auth.OIDCIssuerURL); err == nil {
			a.issuer.BackchannelLogoutURL = u.Scheme + "://" + u.Host + authn.BackchannelLogoutPath
		}
	}
	// The identity provider's back-channel logouts (Keycloak: the client's
	// "Backchannel logout URL").
	a.server.HandleHTTP(authn.BackchannelLogoutPath, a.sessions.BackchannelLogout(a.oidc))
	// Lago's webhooks (Lago: Developers > Webhooks).
	a.server.HandleHTTP(billing.WebhookPath, a.billing.Webhooks)
	ho := a.server.HandlerOptions()
	var signIn *avbv1.SignIn
	if cfg.Auth.OIDCIssuerURL != "" && cfg.Auth.ConsoleClientID != "" {
		signIn = &avbv1.SignIn{Issuer: cfg.Auth.OIDCIssuerURL, ClientId: cfg.Auth.ConsoleClientID}
	}
	a.server.Handle(avbv1connect.NewSystemServiceHandler(server.NewSystemServer(Version, string(cfg.Profile), signIn), ho...))
	a.server.Handle(avbv1connect.NewTenantServiceHandler(server.NewTenantServer(identity), ho...))
	a.server.Handle(avbv1connect.NewAdminServiceHandler(server.NewAdminServer(identity), ho...))
	a.server.Handle(avbv1connect.NewUserServiceHandler(server.NewUserServer(identity), ho...))
	a.server.Handle(avbv1connect.NewApiKeyServiceHandler(server.NewAPIKeyServer(identity), ho...))
	a.server.Handle(avbv1connect.NewRoleServiceHandler(server.NewRoleServer(identity), ho...))
	a.server.Handle(avbv1connect.NewProjectServiceHandler(server.NewProjectServer(identity), ho...))
	a.server.Handle(avbv1connect.NewPersonaServiceHandler(server.NewPersonaServer(identity), ho...))
	a.server.Handle(avbv1connect.NewVoiceConfigServiceHandler(server.NewVoiceConfigServer(identity), ho...))
	a.server.Handle(avbv1connect.NewThemeServiceHandler(server.NewThemeServer(identity), ho...))
	a.server.Handle(avbv1connect.NewNotificationServiceHandler(server.NewNotificationServer(a.db), ho...))
	a.server.Handle(avbv1connect.NewBillingServiceHandler(server.NewBillingServer(a.db, time.Now, a.billing.Lago, a.log), ho...))
	a.server.Handle(avbv1connect.NewAuditServiceHandler(server.NewAuditServer(a.db), ho...))
	a.server.HandleHTTP("/openapi.yaml", server.OpenAPI(openapi.YAML))
	a.server.HandleHTTP("/docs", web.Handler("/docs/", "docs"))
	a.server.HandleHTTP("/docs/", web.Handler("/docs/", "docs"))
	var issuerOrigin []string
	if u, err := url.Parse(cfg.Auth.OIDCIssuerURL); err == nil && signIn != nil {
		issuerOrigin = []string{u.Scheme + "://" + u.Host} // the console trades its sign-in code there
	}
	a.server.HandleHTTP("/console", web.Handler("/console/", "console", issuerOrigin...))
	a.server.HandleHTTP("/console/", web.Handler("/console/", "console", issuerOrigin...))
	voiceDeps, err := a.voice(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	// Voice streams carry audio (little to gain from gzip) and small events
	// (a loss): their responses go uncompressed, which saves ~4% of the CPU
	// of a loaded instance. Compressed requests are still read.
	voiceOpts := append(slices.Clone(ho), connect.WithCompressMinBytes(1<<30))
	voiceHandler := server.NewVoiceServer(voiceDeps)
	a.server.Handle(avbv1connect.NewVoiceServiceHandler(voiceHandler, voiceOpts...))
	a.server.Handle(avbv1connect.NewPhoneNumberServiceHandler(server.NewPhoneNumberServer(identity), ho...))
	a.server.Handle(avbv1connect.NewSipTrunkServiceHandler(server.NewSipTrunkServer(identity), ho...))
	if cfg.SIP.Addr != "" {
		if a.sip, err = a.phone(cfg, identity, voiceHandler); err != nil {
			a.Close()
			return nil, err
		}
	}
	a.server.Handle(avbv1connect.NewCallServiceHandler(server.NewCallServer(identity, voiceHandler, func() server.Dialer {
		if a.sip == nil {
			return nil
		}
		return a.sip
	}), ho...))
	a.server.Handle(avbv1connect.NewSessionServiceHandler(server.NewSessionServer(voiceDeps), ho...))
	a.server.Handle(avbv1connect.NewEventServiceHandler(server.NewEventServer(events.Hub{Redis: a.redis}), ho...))
	go a.countTenants(runCtx, 30*time.Second)
	return a, nil
}

// countTenants keeps tenants_total current.
func (a *App) countTenants(ctx context.Context, every time.Duration) {
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if n, err := a.db.Tenants().Count(qctx); err == nil {
			a.Metrics.Tenants.Set(float64(n))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// identity builds authentication, tenancy and authorization: the
// interceptors every RPC passes, and the dependencies of the identity services.
func (a *App) identity(cfg *config.Config) ([]connect.Interceptor, server.Identity, error) {
	tenants := authn.NewTenants(a.db.Tenants(), a.bus,
		counted(a, "tenant", invalidation.NewCache[*store.Tenant](a.bus, authn.TopicTenant, cfg.Auth.TenantCacheTTL)))
	a.tenants = tenants
	keys := authn.NewAPIKeys(a.db.APIKeys(), a.bus, cfg.Auth.CredentialTTL)
	keys.Observe(func(hit bool) { a.observeCache("api_key", hit) })
	a.usage = authn.NewUsage(a.db.APIKeys(), cfg.Auth.UsageFlush, a.log)
	a.usage.Start()
	if cfg.Auth.DevIssuer {
		issuer, err := authn.NewDevIssuer(cfg.Auth.OIDCIssuerURL)
		if err != nil {
			return nil, server.Identity{}, err
		}
		issuer.Audience = cfg.Auth.OIDCAudience
		a.issuer = issuer
	}
	a.clientTokens = authn.NewClientTokens(a.secrets.ClientToken)
	fetch := cfg.Auth.OIDCFetchTimeout
	oidcClient := &http.Client{Timeout: fetch, Transport: a.deps.Guard("oidc").Transport(nil, fetch, fetch)}
	a.oidc = authn.NewOIDC(cfg.Auth.OIDCIssuerURL, cfg.Auth.OIDCAudience, oidcClient)
	a.sessions = &authn.TokenSessions{DB: a.db, Bus: a.bus, Log: a.log,
		Cache: counted(a, "token_session", invalidation.NewCache[bool](a.bus, authn.TopicTokenSession, cfg.Auth.CredentialTTL))}
	auth := &authn.Authenticator{
		ClientTokens: a.clientTokens,
		OIDC:         a.oidc,
		Sessions:     a.sessions,
		Keys:         keys,
		Tenants:      tenants,
		Users:        a.db.Users(),
		UserCache:    counted(a, "user", invalidation.NewCache[*store.User](a.bus, authn.TopicUser, cfg.Auth.CredentialTTL)),
		BaseDomain:   cfg.Auth.TenantBaseDomain,
	}
	spice, err := authz.Dial(cfg.SpiceDB.Endpoint, cfg.SpiceDB.Token, cfg.SpiceDB.Insecure)
	if err != nil {
		return nil, server.Identity{}, err
	}
	a.spicedb = spice
	spice.Guard(a.deps.Guard("spicedb"), cfg.SpiceDB.CheckTimeout, cfg.SpiceDB.WriteTimeout)
	go a.writeSchema(spice)
	grants := &authz.Grants{C: spice, DB: a.db, TenantChanged: tenants.Invalidate, Log: a.log}
	a.grants = grants
	auth.IdPRoles, auth.SyncRoles = authz.IdPRoles, grants.SyncIdPRoles
	validate, err := middleware.Validate()
	if err != nil {
		return nil, server.Identity{}, err
	}
	if a.decider == nil {
		a.decider = &authz.SpiceDB{C: spice}
	}
	a.limiter = ratelimit.New(a.redis, cfg.RateLimit.Prefix, a.log)
	a.limiter.OnFallback = func(local bool) {
		a.Metrics.RateLimitLocal.Set(map[bool]float64{true: 1}[local])
	}
	tiers := limits.Tiers{Default: cfg.RateLimit.Default, APIKey: cfg.RateLimit.APIKey, Elevated: cfg.RateLimit.Elevated,
		Admin: cfg.RateLimit.Admin, Ceiling: config.Pairs(cfg.RateLimit.Ceiling)}
	// Rate limits come right after authentication: a request over its
	// limit reaches no authorization check and no database transaction.
	// Failed authentication is limited per client IP (brute force).
	// A key's usage counts the requests its limit admits. Auditing is
	// innermost: only the handler's own transactions carry its entry.
	interceptors := []connect.Interceptor{limits.Failures(a.limiter, tiers, a.Metrics), auth.Interceptor(),
		limits.Interceptor(a.limiter, tiers, a.Metrics, limits.OnAdmit(a.usage.Admitted)),
		authz.Interceptor(a.decider), validate, server.AuditInterceptor(a.db, a.log)}
	return interceptors, server.Identity{DB: a.db, Tenants: tenants, Keys: keys, Bus: a.bus, Grants: grants,
		Events: events.Hub{Redis: a.redis}, Log: a.log, Decider: a.decider}, nil
}

// writeSchema writes the authorization schema, retrying until SpiceDB
// answers. Until then permission checks fail closed.
func (a *App) writeSchema(c *authz.Client) {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.WriteSchema(ctx)
		cancel()
		if err == nil {
			a.schemaWritten.Store(true)
			return
		}
		a.log.Warn("authorization schema not written yet; retrying", "error", err.Error(), "retry_in", delay.String())
		time.Sleep(delay)
	}
}

// Grants keeps SpiceDB and the database in step (for seeding and tools).
func (a *App) Grants() *authz.Grants { return a.grants }

// AuthzReady reports whether the authorization schema has been written.
func (a *App) AuthzReady() bool { return a.schemaWritten.Load() }

// WaitAuthzReady waits until the authorization schema is written.
func (a *App) WaitAuthzReady(ctx context.Context) error {
	for !a.schemaWritten.Load() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("authorization schema not written: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Providers builds the configured speech providers and the scripted model.
// Calls to remote providers go through deps' stt and tts guards, with the
// provider API key's current value.
func Providers(vc config.Voice, key *secret.Value, deps *dependency.Set) (voice.Providers, error) {
	prov := voice.Providers{LLM: llm.DefaultScript}
	switch vc.STTProvider {
	case "openai":
		prov.STT = &stt.OpenAI{BaseURL: vc.OpenAIBaseURL, APIKey: key, Model: vc.OpenAISTTModel,
			Client: &http.Client{Timeout: vc.STTTimeout, Transport: deps.Guard("stt").Transport(nil, vc.STTTimeout, vc.STTTimeout)}}
	default:
		prov.STT = stt.NewPocketsphinx(vc.PocketsphinxModel, 8)
	}
	switch vc.TTSProvider {
	case "openai":
		prov.TTS = &tts.OpenAI{BaseURL: vc.OpenAIBaseURL, APIKey: key, Model: vc.OpenAITTSModel, Voice: vc.OpenAITTSVoice,
			Client: &http.Client{Transport: deps.Guard("tts").Transport(nil, vc.TTSFirstByteTimeout, vc.TTSChunkTimeout)}}
	default:
		speech, err := tts.NewEspeak()
		if err != nil {
			return prov, err
		}
		prov.TTS = speech
	}
	return prov, nil
}

// tools builds the webhook tool caller: public addresses only (but for
// AVB_TOOLS_EGRESS_ALLOW), signed with the tenant's secret.
func (a *App) tools(cfg *config.Config) (server.Tools, error) {
	g := &egress.Guard{}
	for _, p := range cfg.Tools.EgressAllow {
		if prefix, err := config.ParsePrefix(p); err == nil {
			g.Allow = append(g.Allow, prefix)
		}
	}
	var roots *x509.CertPool
	if cfg.Tools.CAFile != "" {
		pem, err := os.ReadFile(cfg.Tools.CAFile)
		if err != nil {
			return server.Tools{}, fmt.Errorf("AVB_TOOLS_CA_FILE: %w", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return server.Tools{}, fmt.Errorf("AVB_TOOLS_CA_FILE: no PEM certificate in %s", cfg.Tools.CAFile)
		}
	}
	return server.Tools{Webhooks: tools.NewWebhooks(g, cfg.Tools.RequireHTTPS, roots), Secrets: a.secrets.WebhookSecrets(a.db),
		RequireHTTPS: cfg.Tools.RequireHTTPS}, nil
}

// voice builds the speech providers, the model choice and the call limiter.
func (a *App) voice(cfg *config.Config) (server.Voice, error) {
	vc := cfg.Voice
	prov, err := Providers(vc, a.secrets.OpenAI, a.deps)
	if err != nil {
		return server.Voice{}, err
	}
	if vc.TTSProvider == "embedded" {
		if a.ttsPool, err = synthesisPool(vc.TTSWorkers); err != nil {
			return server.Voice{}, err
		}
		if a.ttsPool != nil {
			prov.TTS = a.ttsPool
			a.log.Info("speech synthesis in worker processes", "workers", a.ttsPool.Size())
			a.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tts_worker_cpu_seconds_total",
				Help: "CPU time used by the speech synthesis worker processes (AVB_TTS_WORKERS), which process_cpu_seconds_total leaves out."},
				a.ttsPool.CPUSeconds))
		}
	}
	m := a.Metrics
	meter := voice.Meter{
		STT: func(provider, outcome string) { m.STTRequests.WithLabelValues(provider, outcome).Inc() },
		TTS: func(provider, outcome string) { m.TTSRequests.WithLabelValues(provider, outcome).Inc() },
		LLM: func(provider, outcome string) { m.LLMRequests.WithLabelValues(provider, outcome).Inc() },
		Tokens: func(provider, direction string, n int) {
			m.LLMTokens.WithLabelValues(provider, direction).Add(float64(n))
		},
	}
	prov = voice.Metered(prov, meter, vc.STTProvider, vc.TTSProvider)
	if vc.TTSCacheBytes > 0 {
		// Outside the meter: a replayed sentence is no provider request.
		cache := tts.NewCache(prov.TTS, int64(vc.TTSCacheBytes))
		cache.OnHit = func() { m.CacheHits.WithLabelValues("tts").Inc() }
		cache.OnMiss = func() { m.CacheMisses.WithLabelValues("tts").Inc() }
		prov.TTS = cache
	}
	scripted := voice.MeteredModel(llm.DefaultScript, "scripted", meter)
	llmClient := &http.Client{Transport: a.deps.Guard("llm").Transport(nil, vc.LLMFirstTokenTimeout, vc.LLMChunkTimeout)}
	models := func(ctx context.Context, name string) (llm.Model, error) {
		switch {
		case name == "" || name == "scripted":
			return scripted, nil
		case vc.OpenAIBaseURL == "":
			return nil, fmt.Errorf("model %q is not available: this server has only the scripted model (set AVB_OPENAI_BASE_URL)", name)
		case name == "openai":
			name = vc.OpenAIModel
		}
		// A tenant that brought its own key is served with it.
		key := a.secrets.OpenAI
		own, err := a.secrets.TenantKey(ctx, a.db, "openai_api_key")
		if err != nil {
			return nil, err
		}
		if own != "" {
			key = secret.New(own)
		}
		return voice.MeteredModel(&llm.OpenAI{BaseURL: vc.OpenAIBaseURL, APIKey: key, Model: name, Client: llmClient}, "openai", meter), nil
	}
	toolDeps, err := a.tools(cfg)
	if err != nil {
		return server.Voice{}, err
	}
	limiter := calllimit.New(a.redis, vc.MaxCallsPerTenant)
	// A call's slot outlives its server by at most the heartbeat timeout.
	limiter.Lease = vc.SessionHeartbeatTimeout
	var reporter *workflows.Reporter
	if vc.SessionWorkflows {
		tc, err := client.NewLazyClient(client.Options{
			HostPort: cfg.Temporal.Address, Namespace: cfg.Temporal.Namespace,
			Logger: tlog.NewStructuredLogger(a.log.With("component", "temporal")),
		})
		if err != nil {
			return server.Voice{}, fmt.Errorf("temporal client: %w", err)
		}
		a.temporal = tc
		reporter = workflows.NewReporter(a.runCtx, tc, a.deps.Guard("temporal"), a.log)
		reporter.StartTimeout, reporter.SignalTimeout = cfg.Temporal.StartTimeout, cfg.Temporal.SignalTimeout
		reporter.Started = func(ctx context.Context, s workflows.Session) error {
			id, tenant, err := parseIDs(s.ID, s.TenantID)
			if err != nil {
				return err
			}
			first, err := a.db.Sessions().WorkflowStarted(tenancy.With(ctx, tenant), id)
			if first {
				a.Metrics.TemporalWorkflows.WithLabelValues("session", "started").Inc()
			}
			return err
		}
		a.reporter = reporter
		reporter.IdleTimeout, reporter.HeartbeatTimeout = vc.SessionIdleTimeout, vc.SessionHeartbeatTimeout
		reporter.Queues = workflows.Queues{Prefix: cfg.Temporal.QueuePrefix}
		if vc.RunWorker {
			acts := &workflows.Activities{DB: a.db, EndLiveCall: a.endLiveCall, Held: limiter.Held, Quotas: a.billing.Quotas}
			acts.AuditRetention.Days, acts.AuditRetention.MaxDays = cfg.Audit.RetentionDays, cfg.Audit.RetentionMaxDays
			a.workers = workflows.NewWorkers(tc, reporter.Queues, acts,
				&workflows.Jobs{DB: a.db, STT: prov.STT, TTS: prov.TTS}, &workflows.Notifications{Events: events.Hub{Redis: a.redis}, Notifier: &events.Notifier{DB: a.db, Hub: events.Hub{Redis: a.redis}},
					Ended: func(status string) { a.Metrics.TemporalWorkflows.WithLabelValues("session", status).Inc() }},
				a.billing.Activities)
			if err := workflows.Prepare(a.runCtx, tc, cfg.Temporal.Namespace, reporter.Queues); err != nil {
				a.log.Warn("temporal namespace not prepared", "error", err.Error())
			}
			if err := a.workers.Start(); err != nil {
				return server.Voice{}, fmt.Errorf("start temporal worker: %w", err)
			}
		}
	}
	v := server.Voice{
		Workflows:      reporter,
		Metrics:        a.Metrics,
		DB:             a.db,
		ClientTokens:   a.clientTokens,
		Providers:      prov,
		Models:         models,
		Limiter:        limiter,
		Bus:            a.bus,
		Log:            a.log,
		ExposeInternal: cfg.HTTP.ExposeErrorInternal,
		Tenant: func(ctx context.Context, id uuid.UUID) (*store.Tenant, error) {
			return a.tenants.Lookup(ctx, id.String())
		},
		Quotas: a.billing.Quotas,
		Tools:  toolDeps,
		// Calls move off a draining instance within its stream drain time.
		Address: func() string {
			if addr, ok := a.advertised.Load().(string); ok {
				return addr
			}
			return advertiseURL(cfg.HTTP, a.server.TLS())
		},
		Draining:     a.readiness.DrainStarted(),
		MoveDeadline: cfg.HTTP.StreamDrainTimeout,
		STTEngine:    vc.STTProvider,
	}
	go v.RunWorkflowOutbox(a.runCtx, 2*time.Second)
	return v, nil
}

// synthesisPool starts espeak-ng worker processes (this binary, as avb
// tts-worker): n of them, one per core for -1; nil for in process.
func synthesisPool(n int) (*tts.Pool, error) {
	if testing.Testing() {
		// A test binary is not avb: run as a worker, it would run the
		// tests. Servers under test that want workers run the avb binary.
		return nil, nil
	}
	if n < 0 {
		if n = runtime.NumCPU(); n < 2 {
			return nil, nil // one core: a worker would only add the hop
		}
	}
	if n == 0 {
		return nil, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("AVB_TTS_WORKERS: find this binary: %w", err)
	}
	pool, err := tts.NewPool(n, func() *exec.Cmd { return exec.Command(exe, TTSWorkerCommand) })
	if err != nil {
		return nil, fmt.Errorf("AVB_TTS_WORKERS: %w", err)
	}
	return pool, nil
}

// TTSWorkerCommand is the avb command a synthesis worker runs.
const TTSWorkerCommand = "tts-worker"

// advertiseURL is how the other instances reach this one.
func advertiseURL(h config.HTTP, tls bool) string {
	if h.AdvertiseURL != "" {
		return strings.TrimRight(h.AdvertiseURL, "/")
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(h.Addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
					host = n.IP.String()
					break
				}
			}
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

func parseIDs(session, tenant string) (uuid.UUID, uuid.UUID, error) {
	s, err := uuid.Parse(session)
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	t, err := uuid.Parse(tenant)
	return s, t, err
}

// billingChanged brings a tenant's Lago customer and subscription up to
// date in the background (a ProvisionBilling workflow on the billing
// queue). Should Temporal not take it now, sync_billing_usage's reconcile
// does within its interval.
func (a *App) billingChanged(ctx context.Context, tenantID uuid.UUID) {
	if a.temporal == nil || a.billing.Lago == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Temporal.StartTimeout)
	go func() {
		defer cancel()
		q := workflows.Queues{Prefix: a.cfg.Temporal.QueuePrefix}
		if err := workflows.BillingChanged(ctx, a.temporal, q, tenantID.String()); err != nil {
			a.log.Warn("billing provisioning not started; the next billing sync reconciles it", "tenant_id", tenantID.String(), "error", err.Error())
		}
	}()
}

// Billing is the platform's billing.
func (a *App) Billing() *Billing { return a.billing }

// Reporter is the session workflow reporter (nil without session workflows).
func (a *App) Reporter() *workflows.Reporter { return a.reporter }

// endLiveCall asks every instance to close a session's live call.
func (a *App) endLiveCall(ctx context.Context, sessionID, reason string) error {
	return a.bus.Publish(ctx, server.TopicSession, server.EndLiveCallKey(sessionID, reason))
}

// DevIssuer is the development OIDC issuer, when AVB_OIDC_DEV_ISSUER is on.
func (a *App) DevIssuer() *authn.DevIssuer { return a.issuer }

// DB is the application's database handle (the avb_app role).
func (a *App) DB() *store.DB { return a.db }

// Secrets returns the platform's secrets (tests watch them change).
func (a *App) Secrets() *Secrets { return a.secrets }

func issuerPath(issuer string) string {
	u, err := url.Parse(issuer)
	if err != nil || u.Path == "" {
		return "/"
	}
	return strings.TrimSuffix(u.Path, "/") + "/"
}

// Migrate applies pending migrations as the schema owner (AVB_DATABASE_MIGRATION_URL).
func Migrate(ctx context.Context, cfg config.Database, log *slog.Logger) error {
	db, err := store.Open(ctx, store.MigrationConfig(cfg))
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := store.MigrateUp(ctx, db.Pool)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, m := range applied {
		log.Info("migration applied", "version", m.Version, "name", m.Name)
	}
	return nil
}

// Serve listens on the configured address and serves until ctx is done, then
// shuts down gracefully. ready, if not nil, receives the bound address.
func (a *App) Serve(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.HTTP.Addr, err)
	}
	h := a.cfg.HTTP
	h.Addr = ln.Addr().String() // the port the listener was given
	a.advertised.Store(advertiseURL(h, a.server.TLS()))
	a.log.Info("listening", "addr", ln.Addr().String(), "version", Version, "profile", a.cfg.Profile,
		"tls", a.server.TLS(), "services", a.server.Services())
	if a.sip != nil {
		listening := make(chan error, 1)
		go func() {
			err := a.sip.Listen(ctx, func(addr netip.AddrPort) {
				a.sipAddr.Store(addr)
				a.log.Info("sip listening", "addr", addr.String())
				listening <- nil
			})
			if err != nil {
				a.log.Error("sip endpoint stopped", "error", err.Error())
				listening <- err
			}
		}()
		// The phone endpoint listens before the server says it is up.
		if err := <-listening; err != nil {
			_ = ln.Close()
			return err
		}
	}
	if ready != nil {
		ready(ln.Addr())
	}
	return a.server.Serve(ctx, ln)
}

// SIPAddr is where the phone endpoint listens (invalid until it does, or
// without AVB_SIP_ADDR).
func (a *App) SIPAddr() netip.AddrPort {
	addr, _ := a.sipAddr.Load().(netip.AddrPort)
	return addr
}

// SIPTLSAddr is where SIP over TLS listens (invalid: it does not).
func (a *App) SIPTLSAddr() netip.AddrPort {
	if a.sip == nil || !a.SIPAddr().IsValid() {
		return netip.AddrPort{}
	}
	return a.sip.TLSAddr()
}

// Close flushes API key usage and releases every client.
func (a *App) Close() {
	if a.usage != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.usage.Stop(ctx); err != nil {
			a.log.Error("final api key usage flush failed", "error", err.Error())
		}
		cancel()
	}
	if a.reporter != nil {
		// Calls have ended; their last reports get a while to reach
		// Temporal before this process lets go of it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if n := a.reporter.Drain(ctx); n > 0 {
			a.log.Error("stopping with session workflow reports undelivered; their sessions end by the outbox and their timeouts", "reports", n)
		}
		cancel()
	}
	a.workers.Stop()
	if a.ttsPool != nil {
		a.ttsPool.Close()
	}
	if a.temporal != nil {
		a.temporal.Close()
	}
	if a.stop != nil {
		a.stop()
	}
	for _, p := range a.probes {
		_ = p.Close()
	}
	if a.redisProbe != nil {
		_ = a.redisProbe.Close()
	}
	if a.redis != nil {
		_ = a.redis.Close()
	}
	if a.spicedb != nil {
		_ = a.spicedb.Close()
	}
	if a.db != nil {
		a.db.Close()
	}
}

// BusHealthy reports whether cache invalidations are being received.
func (a *App) BusHealthy() bool { return a.bus.Healthy() }
