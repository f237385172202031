package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/authn"
	"github.com/agentvoicebox/avb/authz"
	"github.com/agentvoicebox/avb/platform/invalidation"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

func apikeyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "apikey", Short: "Manage API keys from the operator's shell"}
	var tenant, name, description, scopes, tier string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API key for a tenant and print it (the only time it is shown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" || name == "" {
				return errors.New("--tenant and --name are required")
			}
			var list []string
			for s := range strings.SplitSeq(scopes, ",") {
				s = strings.TrimSpace(s)
				if s != "realtime" && s != "billing" && s != "admin" {
					return fmt.Errorf("--scopes: %q is not one of realtime, billing, admin", s)
				}
				list = append(list, s)
			}
			cfg, db, t, err := openTenant(cmd, tenant)
			if err != nil {
				return err
			}
			defer db.Close()
			secret, prefix, hash := authn.NewAPIKey()
			k := &store.APIKey{Name: name, Description: description, Prefix: prefix, Hash: hash, Scopes: list, RateLimitTier: tier}
			if ttl > 0 {
				e := time.Now().Add(ttl)
				k.ExpiresAt = &e
			}
			// The key and its audit entry commit together; the actor is the
			// operator's shell (system).
			actx, _ := store.WithAudit(tenancy.With(cmd.Context(), t.ID), store.AuditEntry{ActorType: "system",
				Action: "create", ResourceType: "api_key", Description: "API key " + strconv.Quote(name) + " created from the operator's shell",
				NewValues: store.AuditValues(map[string]any{"name": name, "scopes": list, "rate_limit_tier": tier})})
			if err := db.APIKeys().Create(actx, k); err != nil {
				return err
			}
			spice, err := authz.Dial(cfg.SpiceDB.Endpoint, cfg.SpiceDB.Token, cfg.SpiceDB.Insecure)
			if err != nil {
				return err
			}
			defer spice.Close()
			if err := spice.WriteSchema(cmd.Context()); err != nil {
				return err
			}
			grants := &authz.Grants{C: spice, DB: db, TenantChanged: func(ctx context.Context, t *store.Tenant) error {
				return publishTenantChange(ctx, cfg.Redis.URL, t)
			}}
			if err := grants.KeyCreated(cmd.Context(), k); err != nil {
				return fmt.Errorf("grant the key its scopes (it exists but can do nothing yet; revoke it and retry): %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created key %s (%s) for tenant %s; it is shown once:\n", k.ID, k.Prefix, t.Slug)
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			return nil
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug")
	create.Flags().StringVar(&name, "name", "", "key name")
	create.Flags().StringVar(&description, "description", "", "what the key is for")
	create.Flags().StringVar(&scopes, "scopes", "realtime", "comma-separated: realtime, billing, admin")
	create.Flags().StringVar(&tier, "rate-limit-tier", "standard", "standard, elevated or unlimited")
	create.Flags().DurationVar(&ttl, "expires-in", 0, "lifetime, e.g. 720h (default: no expiry)")
	cmd.AddCommand(create)
	return cmd
}

// publishTenantChange tells running servers to reload the tenant (its new
// authorization token).
func publishTenantChange(ctx context.Context, redisURL string, t *store.Tenant) error {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	bus := invalidation.New(rdb, nil)
	for _, key := range []string{t.ID.String(), t.Slug} {
		if err := bus.Publish(ctx, authn.TopicTenant, key); err != nil {
			return err
		}
	}
	return nil
}
