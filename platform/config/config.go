// Package config holds every setting of the avb binary. Settings come from
// environment variables with the AVB_ prefix; each has a type, a description
// and a default per profile (dev, test, prod). A setting without a default in
// the active profile is required there. Load validates everything at once and
// returns a single error that names every missing or invalid variable.
package config

import "time"

// Profile selects a set of defaults.
type Profile string

// Profiles.
const (
	ProfileDev  Profile = "dev"
	ProfileTest Profile = "test"
	ProfileProd Profile = "prod"
)

// Config is the whole configuration of the binary.
type Config struct {
	Profile   Profile `env:"AVB_PROFILE" default:"dev" oneof:"dev,test,prod" desc:"configuration profile: dev, test or prod; selects the defaults below"`
	HTTP      HTTP
	Log       Log
	Database  Database
	Redis     Redis
	Temporal  Temporal
	SpiceDB   SpiceDB
	Readiness Readiness
	Auth      Auth
	Voice     Voice
	SIP       SIP
	Breaker   Breaker
	RateLimit RateLimit
	Audit     Audit
	Billing   Billing
	Vault     Vault
	Tools     Tools
	Worker    Worker
	Dev       Dev
}

// Tools governs the tools a model calls during a call. Webhook tools are
// called only on public addresses: a host that resolves to a loopback,
// private, link-local (cloud metadata), multicast or reserved address is
// refused when dialed, unless AVB_TOOLS_EGRESS_ALLOW names it.
type Tools struct {
	RequireHTTPS bool     `env:"AVB_TOOLS_REQUIRE_HTTPS" default:"false" prod:"true" desc:"webhook tool URLs must be https (always in prod)"`
	CAFile       string   `env:"AVB_TOOLS_CA_FILE" default:"" file:"" desc:"PEM file of extra certificate authorities webhook tools' servers may be signed by (a private PKI); empty: the system's"`
	EgressAllow  []string `env:"AVB_TOOLS_EGRESS_ALLOW" default:"" dev:"127.0.0.0/8,::1" cidr:"" desc:"comma-separated CIDRs or addresses webhook tools may reach although not public (development: a tool server on this machine); empty in production"`
}

// Vault makes HashiCorp Vault the source of avb's secrets. Without
// AVB_VAULT_ADDR every secret comes from its environment variable. With it,
// avb logs in with AppRole at start (and refuses to start when Vault does
// not answer or refuses the login), reads the variables marked "from Vault"
// from one KV v2 secret (its fields named like the variables, lower case
// and without AVB_: openai_api_key...), and rereads it every
// AVB_VAULT_SECRETS_TTL, so a new version is used without a restart.
type Vault struct {
	Addr          string        `env:"AVB_VAULT_ADDR" default:"" url:"http,https" desc:"Vault address (e.g. https://vault.internal:8200); empty: secrets come from the environment"`
	RoleID        string        `env:"AVB_VAULT_ROLE_ID" default:"" desc:"AppRole role id avb logs in with; required with AVB_VAULT_ADDR"`
	SecretIDFile  string        `env:"AVB_VAULT_SECRET_ID_FILE" default:"" file:"" desc:"file holding the AppRole secret id (read again at each login, so it may be rotated); required with AVB_VAULT_ADDR"`
	AuthMount     string        `env:"AVB_VAULT_AUTH_MOUNT" default:"approle" desc:"path the AppRole auth method is enabled at"`
	Timeout       time.Duration `env:"AVB_VAULT_TIMEOUT" default:"5s" min:"10ms" desc:"time allowed for each request to Vault"`
	KVMount       string        `env:"AVB_VAULT_KV_MOUNT" default:"secret" desc:"path of the KV v2 secrets engine holding avb's secrets"`
	KVPath        string        `env:"AVB_VAULT_KV_PATH" default:"avb/platform" desc:"the secret, in AVB_VAULT_KV_MOUNT, holding avb's platform secrets"`
	SecretsTTL    time.Duration `env:"AVB_VAULT_SECRETS_TTL" default:"1m" min:"1s" desc:"how long secrets read from Vault are used before they are read again (while Vault does not answer, the last ones read are kept)"`
	RotationGrace time.Duration `env:"AVB_VAULT_ROTATION_GRACE" default:"1h" min:"0s" desc:"a rotated client-token secret or Lago webhook secret still verifies what was signed with the old one for this long"`
	DatabaseMount string        `env:"AVB_VAULT_DATABASE_MOUNT" default:"database" desc:"path of the database secrets engine"`
	PKIMount      string        `env:"AVB_VAULT_PKI_MOUNT" default:"pki" desc:"path of the PKI secrets engine"`
	PKIRole       string        `env:"AVB_VAULT_PKI_ROLE" default:"" desc:"PKI role issuing the server's TLS certificate: avb serves HTTPS with it instead of AVB_TLS_CERT_FILE, and renews it at two thirds of its lifetime without dropping connections; empty: no certificate from Vault"`
	PKICommonName string        `env:"AVB_VAULT_PKI_COMMON_NAME" default:"" desc:"common name of the certificate; required with AVB_VAULT_PKI_ROLE"`
	PKIAltNames   []string      `env:"AVB_VAULT_PKI_ALT_NAMES" default:"" desc:"comma-separated DNS names and IP addresses the certificate also names"`
	PKITTL        time.Duration `env:"AVB_VAULT_PKI_TTL" default:"72h" min:"1s" desc:"lifetime asked for the certificate (the role's max_ttl caps it)"`
	TransitMount  string        `env:"AVB_VAULT_TRANSIT_MOUNT" default:"transit" desc:"path of the Transit secrets engine"`
	TransitKey    string        `env:"AVB_VAULT_TRANSIT_KEY" default:"" desc:"Transit key (created with derived=true) that encrypts tenant secrets, such as a tenant's own OpenAI key; empty: tenant secrets are refused (failed_precondition, secret_store_not_configured)"`
	TransitCache  time.Duration `env:"AVB_VAULT_TRANSIT_CACHE_TTL" default:"5m" min:"0s" desc:"how long a decrypted tenant secret is kept in memory (0: decrypted at every use)"`
	RewrapEvery   time.Duration `env:"AVB_VAULT_TRANSIT_REWRAP_EVERY" default:"10m" min:"1s" desc:"how often tenant secrets encrypted under an older version of the Transit key are rewrapped to the newest (after vault write -f transit/keys/<key>/rotate)"`
	DatabaseRole  string        `env:"AVB_VAULT_DATABASE_ROLE" default:"" desc:"database secrets engine role whose leased credentials the server's pool uses instead of AVB_DATABASE_URL's user and password; empty: AVB_DATABASE_URL's"`
}

// Billing connects usage-based billing to Lago. Without AVB_LAGO_URL the
// usage ledger, quotas and alerts work and nothing is sent anywhere.
type Billing struct {
	LagoURL          string        `env:"AVB_LAGO_URL" default:"" url:"http,https" desc:"Lago API base URL (e.g. https://api.getlago.com or http://lago-api:3000); empty: billing is not synced"`
	LagoAPIKey       string        `env:"AVB_LAGO_API_KEY" default:"" secret:"" vault:"" desc:"Lago API key (Developers > API keys); required with AVB_LAGO_URL"`
	WebhookSecret    string        `env:"AVB_LAGO_WEBHOOK_SECRET" default:"" secret:"" vault:"" desc:"key of Lago's HMAC webhook signatures (X-Lago-Signature-Algorithm hmac); empty: only jwt-signed webhooks are accepted"`
	WebhookIssuer    string        `env:"AVB_LAGO_WEBHOOK_ISSUER" default:"" desc:"iss of Lago's jwt webhook signatures (Lago's LAGO_API_URL); empty: not checked"`
	WebhookMaxAge    time.Duration `env:"AVB_LAGO_WEBHOOK_MAX_AGE" default:"24h" min:"1m" desc:"a jwt-signed webhook issued longer ago than this is refused as stale"`
	Plans            []string      `env:"AVB_LAGO_PLANS" default:"free=avb_free,starter=avb_starter,pro=avb_pro,enterprise=avb_enterprise" names:"free,starter,pro,enterprise" desc:"comma-separated tier=Lago plan code: the plan of each tenant tier's subscription"`
	AudioMinutes     []string      `env:"AVB_BILLING_AUDIO_MINUTES" default:"free=60,starter=5000,pro=50000,enterprise=0" pairs:"free,starter,pro,enterprise" desc:"comma-separated tier=audio minutes a month (input and output) before the tier's quota policy applies (0: no quota); sessions a month are the tenant's limit"`
	Overage          []string      `env:"AVB_BILLING_OVERAGE" default:"starter,pro,enterprise" each:"free,starter,pro,enterprise" desc:"tiers whose usage past 100% of a quota is allowed and billed as overage; the other tiers' new sessions are refused (resource_exhausted, quota_exceeded)"`
	SyncFailingAfter int           `env:"AVB_BILLING_SYNC_FAILING_AFTER" default:"3" min:"1" desc:"usage syncs of a tenant that fail in a row before it is reported (metric billing_sync_failing and a notification to its billing users)"`
	Timeout          time.Duration `env:"AVB_LAGO_TIMEOUT" default:"10s" min:"100ms" desc:"deadline of each request to Lago (retries on 429 and 5xx come on top, bounded)"`
}

// Audit configures the audit trail's retention, which the scheduled
// retain_audit_log job enforces by dropping whole months.
type Audit struct {
	RetentionDays    int `env:"AVB_AUDIT_RETENTION_DAYS" default:"90" min:"1" desc:"days a tenant's audit entries are kept at least (a tenant's settings may keep them longer)"`
	RetentionMaxDays int `env:"AVB_AUDIT_RETENTION_MAX_DAYS" default:"365" min:"1" desc:"the longest retention a tenant's settings may ask for"`
}

// RateLimit configures the request rate limits (requests a minute; 0 turns
// a limit off). Buckets live in Redis, shared by every instance; while Redis
// is down each instance keeps buckets of its own with the same limits.
type RateLimit struct {
	Default  int      `env:"AVB_RATE_LIMIT_DEFAULT" default:"60" test:"100000" min:"0" desc:"requests a minute of a user, and of an unauthenticated client IP"`
	APIKey   int      `env:"AVB_RATE_LIMIT_API_KEY" default:"120" test:"100000" min:"0" desc:"requests a minute of a standard API key (rate_limit_tier standard)"`
	Elevated int      `env:"AVB_RATE_LIMIT_ELEVATED_FACTOR" default:"5" min:"1" desc:"an elevated API key gets this many times AVB_RATE_LIMIT_API_KEY (an unlimited key has no limit of its own)"`
	Admin    int      `env:"AVB_RATE_LIMIT_ADMIN" default:"300" test:"100000" min:"0" desc:"requests a minute of sysadmins and tenant admins"`
	Ceiling  []string `env:"AVB_RATE_LIMIT_TENANT_CEILING" default:"free=120,starter=600,pro=3000,enterprise=0" test:"" pairs:"free,starter,pro,enterprise" desc:"comma-separated tier=requests a minute: the most any API key of a tenant of that tier may make, whatever its own tier (0: no ceiling)"`
	Prefix   string   `env:"AVB_RATE_LIMIT_REDIS_PREFIX" default:"avb:rl:" desc:"prefix of the rate limiter's Redis keys (platforms sharing a Redis use different ones)"`
}

// Breaker configures the circuit breaker every dependency has: while it is
// open, calls to that dependency fail at once with
// unavailable/dependency_unavailable instead of waiting out their deadline.
type Breaker struct {
	OpenFor  time.Duration `env:"AVB_BREAKER_OPEN_FOR" default:"5s" test:"1s" min:"100ms" desc:"how long calls to a dependency fail fast once it timed out, failed AVB_BREAKER_FAILURES times in a row or failed its readiness check; then one probe call is let through"`
	Failures int           `env:"AVB_BREAKER_FAILURES" default:"3" min:"1" desc:"refused or reset calls in a row that open a dependency's breaker (one timeout opens it at once)"`
}

// Voice configures live calls.
type Voice struct {
	MaxCallsPerTenant       int           `env:"AVB_MAX_CALLS_PER_TENANT" default:"20" dev:"1000" min:"1" desc:"live calls one tenant may hold at once, across all instances"`
	PocketsphinxModel       string        `env:"AVB_POCKETSPHINX_MODEL_DIR" default:"/usr/share/pocketsphinx/model/en-us" desc:"pocketsphinx acoustic model, dictionary and language model (Debian package pocketsphinx-en-us)"`
	SessionWorkflows        bool          `env:"AVB_SESSION_WORKFLOWS" default:"true" test:"false" desc:"run each call as a Temporal SessionWorkflow (metrics, limits, post-call jobs)"`
	RunWorker               bool          `env:"AVB_RUN_WORKER" default:"false" dev:"true" desc:"also run the Temporal worker in this process (avb worker runs it alone)"`
	SessionIdleTimeout      time.Duration `env:"AVB_SESSION_IDLE_TIMEOUT" default:"30m" min:"1s" desc:"a session nobody has spoken in for this long ends (sessions may set their own)"`
	SessionHeartbeatTimeout time.Duration `env:"AVB_SESSION_HEARTBEAT_TIMEOUT" default:"1m" min:"1s" desc:"a call whose server stops reporting for this long ends as error (its server died)"`
	STTProvider             string        `env:"AVB_STT_PROVIDER" default:"embedded" oneof:"embedded,openai" desc:"speech to text: embedded (pocketsphinx) or openai (an OpenAI-compatible transcription server)"`
	TTSProvider             string        `env:"AVB_TTS_PROVIDER" default:"embedded" oneof:"embedded,openai" desc:"text to speech: embedded (espeak-ng) or openai (an OpenAI-compatible speech server)"`
	TTSWorkers              int           `env:"AVB_TTS_WORKERS" default:"-1" test:"0" min:"-1" desc:"espeak-ng runs one synthesis at a time per process: this many worker processes (avb tts-worker) synthesize in parallel. -1: one per core (in process on a single core); 0: in process"`
	TTSCacheBytes           int           `env:"AVB_TTS_CACHE_BYTES" default:"67108864" min:"0" desc:"synthesized sentences kept for replay (by voice and text), in bytes of audio shared by every call of an instance; 0: no cache"`
	OpenAIBaseURL           string        `env:"AVB_OPENAI_BASE_URL" default:"" url:"http,https" desc:"OpenAI-compatible API base URL (OpenAI, vLLM, Ollama, llama.cpp...), e.g. http://localhost:11434/v1; empty: only the scripted model"`
	OpenAIKey               string        `env:"AVB_OPENAI_API_KEY" default:"" secret:"" vault:"" desc:"API key for AVB_OPENAI_BASE_URL"`
	OpenAIModel             string        `env:"AVB_OPENAI_MODEL" default:"gpt-4o-mini" desc:"model used when a session asks for model \"openai\""`
	OpenAISTTModel          string        `env:"AVB_OPENAI_STT_MODEL" default:"whisper-1" desc:"transcription model when AVB_STT_PROVIDER=openai"`
	OpenAITTSModel          string        `env:"AVB_OPENAI_TTS_MODEL" default:"tts-1" desc:"speech model when AVB_TTS_PROVIDER=openai"`
	LLMFirstTokenTimeout    time.Duration `env:"AVB_LLM_FIRST_TOKEN_TIMEOUT" default:"10s" min:"10ms" desc:"time allowed from sending a prompt to the model's first streamed token"`
	LLMChunkTimeout         time.Duration `env:"AVB_LLM_CHUNK_TIMEOUT" default:"5s" min:"10ms" desc:"time allowed between two streamed chunks of the model's answer"`
	STTTimeout              time.Duration `env:"AVB_STT_TIMEOUT" default:"10s" min:"10ms" desc:"time allowed for one transcription by an OpenAI-compatible server"`
	TTSFirstByteTimeout     time.Duration `env:"AVB_TTS_FIRST_BYTE_TIMEOUT" default:"5s" min:"10ms" desc:"time allowed until an OpenAI-compatible speech server starts answering"`
	TTSChunkTimeout         time.Duration `env:"AVB_TTS_CHUNK_TIMEOUT" default:"5s" min:"10ms" desc:"time allowed between two chunks of synthesized audio"`
	OpenAITTSVoice          string        `env:"AVB_OPENAI_TTS_VOICE" default:"alloy" desc:"default voice when AVB_TTS_PROVIDER=openai"`
}

// SIP configures the phone endpoint: SIP trunks send the tenants' numbers
// calls here (and avb places calls out through them).
type SIP struct {
	Addr     string `env:"AVB_SIP_ADDR" default:"" dev:"127.0.0.1:5060" hostport:"" desc:"listen address (host:port, UDP and TCP) of the SIP endpoint trunks send calls to; empty: no phone calls"`
	Host     string `env:"AVB_SIP_HOST" default:"" desc:"the address avb gives trunks in SIP Contact headers and SDP (where they send signalling and media); empty: the listen address, or the machine's outbound address when it listens on all"`
	RTPPorts string `env:"AVB_SIP_RTP_PORTS" default:"10000-20000" desc:"UDP port range of call media (RTP), first-last: two ports a call, open them to the trunks"`
	TLSAddr  string `env:"AVB_SIP_TLS_ADDR" default:"" hostport:"" desc:"listen address (host:port) of SIP over TLS, with AVB_SIP_TLS_CERT_FILE and AVB_SIP_TLS_KEY_FILE; empty: no SIP over TLS"`
	TLSCert  string `env:"AVB_SIP_TLS_CERT_FILE" default:"" file:"" desc:"PEM certificate of SIP over TLS"`
	TLSKey   string `env:"AVB_SIP_TLS_KEY_FILE" default:"" file:"" desc:"PEM private key of AVB_SIP_TLS_CERT_FILE"`
	Rate     int    `env:"AVB_SIP_RATE_LIMIT" default:"20" min:"0" desc:"SIP calls a second one source address may start (0: no limit): a flood beyond it is answered 503"`
}

// HTTP configures the one listener that serves Connect, gRPC, gRPC-Web and
// the plain HTTP endpoints (health, metrics).
type HTTP struct {
	Addr                string        `env:"AVB_HTTP_ADDR" default:":8080" hostport:"" desc:"listen address (host:port) for Connect, gRPC, gRPC-Web, health and metrics"`
	TLSCertFile         string        `env:"AVB_TLS_CERT_FILE" default:"" file:"" desc:"PEM certificate; with AVB_TLS_KEY_FILE serves HTTPS (HTTP/2 over TLS), otherwise HTTP/2 cleartext"`
	TLSKeyFile          string        `env:"AVB_TLS_KEY_FILE" default:"" file:"" desc:"PEM private key for AVB_TLS_CERT_FILE"`
	AdvertiseURL        string        `env:"AVB_ADVERTISE_URL" default:"" url:"http,https" desc:"how the other instances reach this one, e.g. http://$(POD_IP):8080: browser-path requests for a call held here that reach another instance are forwarded to it. Empty: http(s)://AVB_HTTP_ADDR, with the machine's first non-loopback address when the host is unspecified"`
	ReadHeaderTimeout   time.Duration `env:"AVB_READ_HEADER_TIMEOUT" default:"10s" min:"1s" desc:"time allowed to read request headers"`
	MaxRequestBytes     int           `env:"AVB_MAX_REQUEST_BYTES" default:"4194304" min:"1024" desc:"largest accepted request message in bytes"`
	ShutdownTimeout     time.Duration `env:"AVB_SHUTDOWN_TIMEOUT" default:"30s" min:"1s" desc:"on SIGTERM, how long in-flight calls may take to finish"`
	StreamDrainTimeout  time.Duration `env:"AVB_STREAM_DRAIN_TIMEOUT" default:"10s" dev:"2s" test:"2s" min:"0s" desc:"on SIGTERM, how long open streams keep running before they are closed with unavailable/server_shutting_down"`
	CORSAllowedOrigins  []string      `env:"AVB_CORS_ALLOWED_ORIGINS" default:"" dev:"http://localhost:5173,http://localhost:8080,http://127.0.0.1:8080" desc:"comma-separated browser origins allowed to call the API (none by default in prod)"`
	TrustedProxies      []string      `env:"AVB_TRUSTED_PROXIES" default:"" cidr:"" desc:"comma-separated CIDRs or addresses of the reverse proxies in front of avb: from a trusted proxy, the client IP is the right-most X-Forwarded-For entry that is not a trusted proxy, and X-Forwarded-Proto says whether the request was https (HSTS)"`
	HTTPSRedirect       bool          `env:"AVB_HTTPS_REDIRECT" default:"true" dev:"false" test:"false" desc:"redirect plain-HTTP requests (not from a trusted proxy that says https) to https, except health, readiness and metrics"`
	ExposeErrorInternal bool          `env:"AVB_EXPOSE_INTERNAL_ERRORS" default:"false" dev:"true" desc:"include the cause of internal errors in responses (never in prod)"`
}

// Log configures structured logging.
type Log struct {
	Level  string `env:"AVB_LOG_LEVEL" default:"info" oneof:"debug,info,warn,error" desc:"minimum log level"`
	Format string `env:"AVB_LOG_FORMAT" default:"json" dev:"text" oneof:"json,text" desc:"log format: json (one object a line) or text"`
}

// Database configures the PostgreSQL pool.
type Database struct {
	URL              string        `env:"AVB_DATABASE_URL" dev:"postgres://avb_app@127.0.0.1:5432/avb?sslmode=disable" test:"postgres://avb_app@127.0.0.1:5432/avb_test?sslmode=disable" url:"postgres,postgresql" secret:"" desc:"PostgreSQL URL the server uses: the avb_app role (no superuser, no BYPASSRLS), so row-level security applies"`
	MigrationURL     string        `env:"AVB_DATABASE_MIGRATION_URL" default:"" dev:"postgres://postgres@127.0.0.1:5432/avb?sslmode=disable" test:"postgres://postgres@127.0.0.1:5432/avb_test?sslmode=disable" url:"postgres,postgresql" secret:"" desc:"PostgreSQL URL of the schema owner, for avb migrate and AVB_DATABASE_MIGRATE_ON_START"`
	MaxConns         int           `env:"AVB_DATABASE_MAX_CONNS" default:"20" min:"1" desc:"largest number of pooled connections"`
	MinConns         int           `env:"AVB_DATABASE_MIN_CONNS" default:"2" dev:"0" test:"0" min:"0" desc:"connections the pool keeps open when idle"`
	ConnectTimeout   time.Duration `env:"AVB_DATABASE_CONNECT_TIMEOUT" default:"5s" min:"100ms" desc:"time allowed to open one connection"`
	MaxConnLifetime  time.Duration `env:"AVB_DATABASE_MAX_CONN_LIFETIME" default:"1h" min:"1m" desc:"a connection older than this is closed and replaced"`
	MaxConnIdleTime  time.Duration `env:"AVB_DATABASE_MAX_CONN_IDLE_TIME" default:"15m" min:"10s" desc:"an idle connection older than this is closed"`
	AcquireTimeout   time.Duration `env:"AVB_DATABASE_ACQUIRE_TIMEOUT" default:"2s" test:"5s" min:"10ms" desc:"time allowed to get a pooled connection (the pool is exhausted or the database does not answer)"`
	QueryTimeout     time.Duration `env:"AVB_DATABASE_QUERY_TIMEOUT" default:"5s" test:"15s" min:"10ms" desc:"time allowed for one transaction of a request, from acquiring its connection to its commit"`
	StatementTimeout time.Duration `env:"AVB_DATABASE_STATEMENT_TIMEOUT" default:"4s" test:"10s" min:"10ms" desc:"statement_timeout of the server's sessions: PostgreSQL cancels a statement running longer"`
	IdleInTxTimeout  time.Duration `env:"AVB_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT" default:"10s" min:"100ms" desc:"idle_in_transaction_session_timeout of the server's sessions: PostgreSQL ends a session whose transaction waits on avb longer"`
	MigrateOnStart   bool          `env:"AVB_DATABASE_MIGRATE_ON_START" default:"false" dev:"true" desc:"apply pending migrations when the server starts"`
}

// Redis configures the Redis client (cache, rate limits, pub/sub).
type Redis struct {
	URL            string        `env:"AVB_REDIS_URL" dev:"redis://127.0.0.1:6379/0" test:"redis://127.0.0.1:6379/0" url:"redis,rediss,unix" secret:"" desc:"Redis connection URL"`
	DialTimeout    time.Duration `env:"AVB_REDIS_DIAL_TIMEOUT" default:"1s" min:"10ms" desc:"time allowed to open one Redis connection (also how soon a lost pub/sub subscription is retried)"`
	CacheTTL       time.Duration `env:"AVB_CACHE_TTL" default:"10m" min:"0s" desc:"how long the tenant-scoped Redis cache keeps a project, persona or voice config (writes invalidate it at once; 0 turns the cache off)"`
	CommandTimeout time.Duration `env:"AVB_REDIS_COMMAND_TIMEOUT" default:"500ms" test:"3s" min:"10ms" desc:"time allowed for one Redis command or script, including waiting for a pooled connection"`
}

// Temporal configures the Temporal client.
type Temporal struct {
	Address   string `env:"AVB_TEMPORAL_ADDRESS" dev:"127.0.0.1:7233" test:"127.0.0.1:7233" hostport:"" desc:"Temporal frontend address (host:port)"`
	Namespace string `env:"AVB_TEMPORAL_NAMESPACE" default:"default" desc:"Temporal namespace"`
	// QueuePrefix lets several platforms share a namespace (tests do).
	QueuePrefix   string        `env:"AVB_TEMPORAL_QUEUE_PREFIX" default:"" desc:"prefix of this platform's task queue and schedule names, for platforms sharing a namespace"`
	StartTimeout  time.Duration `env:"AVB_TEMPORAL_START_TIMEOUT" default:"5s" test:"10s" min:"10ms" desc:"time allowed to start a workflow; sessions start theirs in the background and retry"`
	SignalTimeout time.Duration `env:"AVB_TEMPORAL_SIGNAL_TIMEOUT" default:"3s" min:"10ms" desc:"time allowed for one signal, query or update of a workflow; a call's signals are kept and retried"`
}

// SpiceDB configures the authorization client.
type SpiceDB struct {
	Endpoint     string        `env:"AVB_SPICEDB_ENDPOINT" dev:"127.0.0.1:50051" test:"127.0.0.1:50051" hostport:"" desc:"SpiceDB gRPC address (host:port)"`
	Token        string        `env:"AVB_SPICEDB_TOKEN" dev:"avb-dev-spicedb-key" test:"avb-test-spicedb-key" secret:"" desc:"SpiceDB preshared key"`
	Insecure     bool          `env:"AVB_SPICEDB_INSECURE" default:"false" dev:"true" test:"true" desc:"connect to SpiceDB without TLS"`
	CheckTimeout time.Duration `env:"AVB_SPICEDB_CHECK_TIMEOUT" default:"1s" test:"5s" min:"10ms" desc:"time allowed for one permission check or lookup"`
	WriteTimeout time.Duration `env:"AVB_SPICEDB_WRITE_TIMEOUT" default:"2s" test:"5s" min:"10ms" desc:"time allowed for one relationship write or delete"`
}

// Readiness configures GET /health/ready/ and the gRPC health service.
type Readiness struct {
	Timeout  time.Duration `env:"AVB_READINESS_TIMEOUT" default:"2s" min:"10ms" desc:"time allowed for each dependency check"`
	Optional []string      `env:"AVB_READINESS_OPTIONAL" default:"" each:"postgres,redis,temporal,spicedb" desc:"dependencies whose failure is reported but does not make the server unready"`
}

// Auth configures authentication and tenant resolution.
type Auth struct {
	OIDCIssuerURL    string        `env:"AVB_OIDC_ISSUER_URL" dev:"http://127.0.0.1:8080/dev/oidc/realms/avb" test:"" url:"http,https" desc:"OIDC issuer (Keycloak realm URL, e.g. https://id.example.com/realms/avb); discovery and JWKS are fetched from it. With AVB_OIDC_DEV_ISSUER it defaults to this server's own issuer on AVB_HTTP_ADDR"`
	OIDCFetchTimeout time.Duration `env:"AVB_OIDC_FETCH_TIMEOUT" default:"3s" test:"5s" min:"10ms" desc:"time allowed to fetch the issuer's discovery document or its signing keys (JWKS)"`
	OIDCAudience     string        `env:"AVB_OIDC_AUDIENCE" default:"avb-api" desc:"audience (aud) a token must carry"`
	ConsoleClientID  string        `env:"AVB_CONSOLE_CLIENT_ID" default:"avb-console" desc:"OIDC client the web console signs in as (a public client with PKCE, like Keycloak's avb-console); empty: the console offers API-key sign-in only"`
	DevIssuer        bool          `env:"AVB_OIDC_DEV_ISSUER" default:"false" dev:"true" desc:"serve the built-in development OIDC issuer under /dev/oidc/ (never in prod)"`
	TenantBaseDomain string        `env:"AVB_TENANT_BASE_DOMAIN" default:"" dev:"localhost" desc:"base domain for tenant subdomains (<slug>.<base domain>); empty turns subdomain resolution off"`
	TenantCacheTTL   time.Duration `env:"AVB_TENANT_CACHE_TTL" default:"5s" min:"0s" desc:"how long a tenant lookup is cached in process (changes also invalidate it through Redis)"`
	CredentialTTL    time.Duration `env:"AVB_CREDENTIAL_CACHE_TTL" default:"30s" min:"0s" desc:"how long a verified API key or user record is cached in process (revocation and deactivation also invalidate it through Redis)"`
	ClientTokenKey   string        `env:"AVB_CLIENT_TOKEN_SECRET" dev:"avb-dev-client-token-secret-change-me" test:"avb-test-client-token-secret-0000" minlen:"32" secret:"" vault:"" desc:"HMAC key of browser client tokens (at least 32 characters; required in prod)"`
	UsageFlush       time.Duration `env:"AVB_APIKEY_USAGE_FLUSH_INTERVAL" default:"2s" min:"100ms" desc:"how often aggregated API key usage is written to the database"`
}

// Worker configures `avb worker`.
type Worker struct {
	Addr string `env:"AVB_WORKER_ADDR" default:":8081" hostport:"" desc:"listen address of avb worker's /health/ (liveness) and /metrics"`
}

// Dev configures `avb dev`, the local platform.
type Dev struct {
	DataDir  string `env:"AVB_DEV_DATA_DIR" default:".data" desc:"where avb dev keeps local state (Temporal database, logs)"`
	ToolsDir string `env:"AVB_TOOLS_DIR" default:"bin" desc:"where the pinned temporal and spicedb binaries are (make tools installs them)"`
}
