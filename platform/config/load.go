package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Problem is one missing or invalid variable.
type Problem struct {
	Var    string
	Reason string
}

// Error lists every problem found in one Load.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid configuration: %d problem(s)", len(e.Problems))
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s", p.Var, p.Reason)
	}
	return b.String()
}

// Vars returns the names of the problem variables, in order.
func (e *Error) Vars() []string {
	names := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		names[i] = p.Var
	}
	return names
}

// Lookup reads one variable, like os.LookupEnv.
type Lookup func(name string) (string, bool)

// FromEnv loads the configuration from the process environment.
func FromEnv() (*Config, error) {
	return Load(os.LookupEnv)
}

// Load builds a Config from lookup and validates all of it. A variable that is
// set to the empty string counts as unset.
func Load(lookup Lookup) (*Config, error) {
	var cfg Config
	var problems []Problem
	add := func(v, format string, args ...any) {
		problems = append(problems, Problem{Var: v, Reason: fmt.Sprintf(format, args...)})
	}

	profile := ProfileDev
	profileKnown := true
	if raw, ok := lookup("AVB_PROFILE"); ok && raw != "" {
		profile = Profile(raw)
		profileKnown = slices.Contains([]Profile{ProfileDev, ProfileTest, ProfileProd}, profile)
	}

	vaultAddr, _ := lookup("AVB_VAULT_ADDR")
	for _, v := range fields(reflect.ValueOf(&cfg).Elem()) {
		raw, ok := lookup(v.Name)
		if !ok || raw == "" {
			def, has := v.Default(profile)
			switch {
			case has:
				raw = def
			case !profileKnown:
				continue // requiredness depends on the profile, reported below
			case v.FromVault && vaultAddr != "":
				continue // read from Vault at start (ApplyVault checks it)
			default:
				add(v.Name, "required in profile %s (%s)", profile, v.Desc)
				continue
			}
		}
		if err := v.set(raw); err != nil {
			add(v.Name, "%v", err)
		}
	}
	if !profileKnown {
		// Reported once, under its own name; the type problems above still count.
		problems = slices.DeleteFunc(problems, func(p Problem) bool { return p.Var == "AVB_PROFILE" })
		problems = append([]Problem{{Var: "AVB_PROFILE", Reason: fmt.Sprintf("%q is not one of dev, test, prod", profile)}}, problems...)
	}
	// The development issuer is served by this server itself, so unless
	// told otherwise its URL follows the listen address.
	if raw, ok := lookup("AVB_OIDC_ISSUER_URL"); cfg.Auth.DevIssuer && (!ok || raw == "") {
		if u := devIssuerURL(&cfg.HTTP); u != "" {
			cfg.Auth.OIDCIssuerURL = u
		}
	}
	problems = append(problems, crossCheck(&cfg, problems)...)
	if len(problems) > 0 {
		return nil, &Error{Problems: problems}
	}
	return &cfg, nil
}

// crossCheck validates rules that span variables. It skips a rule when one of
// its variables already has a problem, so each variable is named once.
func crossCheck(c *Config, earlier []Problem) []Problem {
	return crossCheckWith(c, earlier, false)
}

// crossCheckWith is crossCheck; fromVaultDone says the secrets from Vault
// are in c already (before they are, a secret Vault will provide is not
// missing yet).
func crossCheckWith(c *Config, earlier []Problem, fromVaultDone bool) []Problem {
	bad := map[string]bool{}
	for _, p := range earlier {
		bad[p.Var] = true
	}
	var out []Problem
	check := func(cond bool, v, reason string, involved ...string) {
		for _, name := range append(involved, v) {
			if bad[name] {
				return
			}
		}
		if !cond {
			out = append(out, Problem{Var: v, Reason: reason})
		}
	}
	check(c.HTTP.TLSCertFile != "" || c.HTTP.TLSKeyFile == "", "AVB_TLS_CERT_FILE",
		"required when AVB_TLS_KEY_FILE is set", "AVB_TLS_KEY_FILE")
	check(c.HTTP.TLSKeyFile != "" || c.HTTP.TLSCertFile == "", "AVB_TLS_KEY_FILE",
		"required when AVB_TLS_CERT_FILE is set", "AVB_TLS_CERT_FILE")
	check(c.HTTP.StreamDrainTimeout < c.HTTP.ShutdownTimeout, "AVB_STREAM_DRAIN_TIMEOUT",
		"must be shorter than AVB_SHUTDOWN_TIMEOUT", "AVB_SHUTDOWN_TIMEOUT")
	check(c.Database.MinConns <= c.Database.MaxConns, "AVB_DATABASE_MIN_CONNS",
		"must not exceed AVB_DATABASE_MAX_CONNS", "AVB_DATABASE_MAX_CONNS")
	check(c.Profile != ProfileProd || !c.Auth.DevIssuer, "AVB_OIDC_DEV_ISSUER",
		"must be false in profile prod", "AVB_PROFILE")
	check(!c.Database.MigrateOnStart || c.Database.MigrationURL != "", "AVB_DATABASE_MIGRATION_URL",
		"required when AVB_DATABASE_MIGRATE_ON_START is true", "AVB_DATABASE_MIGRATE_ON_START")
	check((c.Voice.STTProvider != "openai" && c.Voice.TTSProvider != "openai") || c.Voice.OpenAIBaseURL != "", "AVB_OPENAI_BASE_URL",
		"required when a provider is openai", "AVB_STT_PROVIDER", "AVB_TTS_PROVIDER")
	check(c.Profile != ProfileProd || !c.HTTP.ExposeErrorInternal, "AVB_EXPOSE_INTERNAL_ERRORS",
		"must be false in profile prod", "AVB_PROFILE")
	check(c.Billing.LagoURL == "" || c.Billing.LagoAPIKey != "" || (c.Vault.Addr != "" && !fromVaultDone), "AVB_LAGO_API_KEY",
		"required when AVB_LAGO_URL is set", "AVB_LAGO_URL")
	check(c.Vault.Addr == "" || c.Vault.RoleID != "", "AVB_VAULT_ROLE_ID",
		"required when AVB_VAULT_ADDR is set", "AVB_VAULT_ADDR")
	check(c.Vault.Addr == "" || c.Vault.SecretIDFile != "", "AVB_VAULT_SECRET_ID_FILE",
		"required when AVB_VAULT_ADDR is set", "AVB_VAULT_ADDR")
	check(c.Vault.PKIRole == "" || c.Vault.Addr != "", "AVB_VAULT_ADDR",
		"required when AVB_VAULT_PKI_ROLE is set", "AVB_VAULT_PKI_ROLE")
	check(c.Vault.PKIRole == "" || c.Vault.PKICommonName != "", "AVB_VAULT_PKI_COMMON_NAME",
		"required when AVB_VAULT_PKI_ROLE is set", "AVB_VAULT_PKI_ROLE")
	check(c.Vault.PKIRole == "" || c.HTTP.TLSCertFile == "", "AVB_TLS_CERT_FILE",
		"must be empty when AVB_VAULT_PKI_ROLE is set (the certificate comes from Vault)", "AVB_VAULT_PKI_ROLE")
	return out
}

// VaultField is the field of the Vault KV secret that holds variable name:
// the name lower case, without AVB_ (AVB_OPENAI_API_KEY: openai_api_key).
func VaultField(name string) string {
	return strings.ToLower(strings.TrimPrefix(name, "AVB_"))
}

// ApplyVault sets the variables marked "from Vault" from the fields of
// avb's KV secret (a field overrides the environment), validates them as
// Load does, and reports those still missing where they are required.
func ApplyVault(cfg *Config, fields map[string]string) error {
	var problems []Problem
	for _, v := range Vars(cfg) {
		if !v.FromVault {
			continue
		}
		if raw := fields[VaultField(v.Name)]; raw != "" {
			if err := v.set(raw); err != nil {
				problems = append(problems, Problem{Var: v.Name, Reason: "in Vault (field " + VaultField(v.Name) + "): " + err.Error()})
			}
			continue
		}
		if _, has := v.Default(cfg.Profile); !has && v.field.String() == "" {
			problems = append(problems, Problem{Var: v.Name, Reason: fmt.Sprintf("required in profile %s: set field %s of the Vault secret, or the variable (%s)",
				cfg.Profile, VaultField(v.Name), v.Desc)})
		}
	}
	problems = append(problems, crossCheckWith(cfg, problems, true)...)
	if len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}

// Var describes one environment variable.
type Var struct {
	Name   string
	Desc   string
	Secret bool
	// FromVault: with AVB_VAULT_ADDR, the value may come from Vault.
	FromVault bool
	field     reflect.Value
	tag       reflect.StructTag
}

// Default returns the variable's default in profile p, and whether it has one.
func (v Var) Default(p Profile) (string, bool) {
	if d, ok := v.tag.Lookup(string(p)); ok {
		return d, true
	}
	return v.tag.Lookup("default")
}

// Value returns the variable's current value as text, with secrets redacted.
func (v Var) Value() string {
	var s string
	switch x := v.field.Interface().(type) {
	case []string:
		s = strings.Join(x, ",")
	default:
		s = fmt.Sprint(x)
	}
	if v.Secret {
		return redact(s)
	}
	return s
}

// Vars lists every variable of cfg in declaration order.
func Vars(cfg *Config) []Var {
	return fields(reflect.ValueOf(cfg).Elem())
}

func fields(v reflect.Value) []Var {
	var out []Var
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		name, ok := f.Tag.Lookup("env")
		if !ok {
			if f.Type.Kind() == reflect.Struct {
				out = append(out, fields(fv)...)
			}
			continue
		}
		_, secret := f.Tag.Lookup("secret")
		_, fromVault := f.Tag.Lookup("vault")
		out = append(out, Var{Name: name, Desc: f.Tag.Get("desc"), Secret: secret, FromVault: fromVault, field: fv, tag: f.Tag})
	}
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// set parses raw into the field and applies the field's validation tags.
func (v Var) set(raw string) error {
	switch {
	case v.field.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration (examples: 500ms, 10s, 1h)", raw)
		}
		if m, ok := v.tag.Lookup("min"); ok {
			if min, _ := time.ParseDuration(m); d < min {
				return fmt.Errorf("%s is below the minimum %s", d, min)
			}
		}
		v.field.SetInt(int64(d))
	case v.field.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		if m, ok := v.tag.Lookup("min"); ok {
			if min, _ := strconv.Atoi(m); n < min {
				return fmt.Errorf("%d is below the minimum %d", n, min)
			}
		}
		v.field.SetInt(int64(n))
	case v.field.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not a boolean (true or false)", raw)
		}
		v.field.SetBool(b)
	case v.field.Kind() == reflect.Slice:
		var items []string
		for item := range strings.SplitSeq(raw, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		if allowed, ok := v.tag.Lookup("each"); ok {
			for _, item := range items {
				if !slices.Contains(strings.Split(allowed, ","), item) {
					return fmt.Errorf("%q is not one of %s", item, allowed)
				}
			}
		}
		if keys, ok := v.tag.Lookup("pairs"); ok {
			for _, item := range items {
				k, n, found := strings.Cut(item, "=")
				if !found || !slices.Contains(strings.Split(keys, ","), k) {
					return fmt.Errorf("%q is not name=number with a name of %s", item, keys)
				}
				if i, err := strconv.Atoi(n); err != nil || i < 0 {
					return fmt.Errorf("%q: %q is not a number of at least 0", item, n)
				}
			}
		}
		if keys, ok := v.tag.Lookup("names"); ok {
			for _, item := range items {
				k, text, found := strings.Cut(item, "=")
				if !found || !slices.Contains(strings.Split(keys, ","), k) || strings.TrimSpace(text) == "" {
					return fmt.Errorf("%q is not name=text with a name of %s", item, keys)
				}
			}
		}
		if _, ok := v.tag.Lookup("cidr"); ok {
			for _, item := range items {
				if _, err := ParsePrefix(item); err != nil {
					return err
				}
			}
		}
		v.field.Set(reflect.ValueOf(items))
	default:
		if err := validateString(v.tag, raw); err != nil {
			return err
		}
		v.field.SetString(raw)
	}
	return nil
}

func validateString(tag reflect.StructTag, raw string) error {
	if raw == "" {
		return nil // an optional setting left empty
	}
	if m, ok := tag.Lookup("minlen"); ok {
		if n, _ := strconv.Atoi(m); len(raw) < n {
			return fmt.Errorf("must be at least %d characters", n)
		}
	}
	if allowed, ok := tag.Lookup("oneof"); ok && !slices.Contains(strings.Split(allowed, ","), raw) {
		return fmt.Errorf("%q is not one of %s", raw, allowed)
	}
	if schemes, ok := tag.Lookup("url"); ok {
		u, err := url.Parse(raw)
		if err != nil || !slices.Contains(strings.Split(schemes, ","), u.Scheme) || (u.Host == "" && u.Path == "") {
			return fmt.Errorf("not a URL with scheme %s", strings.ReplaceAll(schemes, ",", " or "))
		}
	}
	if _, ok := tag.Lookup("hostport"); ok {
		if _, port, err := net.SplitHostPort(raw); err != nil || port == "" {
			return fmt.Errorf("%q is not host:port", raw)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q has no valid port", raw)
		}
	}
	if _, ok := tag.Lookup("file"); ok {
		if st, err := os.Stat(raw); err != nil || st.IsDir() {
			return fmt.Errorf("file %q is not readable", raw)
		}
	}
	return nil
}

// redact hides a secret: a URL keeps its scheme, host and path but loses its
// password; anything else is replaced entirely.
func redact(s string) string {
	if s == "" {
		return ""
	}
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Host != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "REDACTED")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return "REDACTED"
}

// devIssuerURL is the development issuer's URL on this server's listen
// address ("" when the port is not known before listening).
func devIssuerURL(h *HTTP) string {
	host, port, err := net.SplitHostPort(h.Addr)
	if err != nil || port == "0" {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if h.TLSCertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/dev/oidc/realms/avb"
}

// ParsePrefix parses a CIDR ("10.0.0.0/8") or a single address ("10.0.0.1",
// a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Names reads a list of name=text items (validated by the names tag).
func Names(items []string) map[string]string {
	out := make(map[string]string, len(items))
	for _, item := range items {
		k, text, _ := strings.Cut(item, "=")
		out[k] = strings.TrimSpace(text)
	}
	return out
}

// Pairs reads a list of name=number items (validated by the pairs tag).
func Pairs(items []string) map[string]int {
	out := make(map[string]int, len(items))
	for _, item := range items {
		k, n, _ := strings.Cut(item, "=")
		out[k], _ = strconv.Atoi(n)
	}
	return out
}
