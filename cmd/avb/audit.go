package main

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
)

func auditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Check the audit trail"}
	var tenant string
	var maxBreaks int
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Recompute a tenant's audit hash chain and report the first broken links (exit 1 when broken)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" {
				return errors.New("--tenant is required")
			}
			_, db, t, err := openTenant(cmd, tenant)
			if err != nil {
				return err
			}
			defer db.Close()
			v, err := db.AuditLog().Verify(tenancy.With(cmd.Context(), t.ID), maxBreaks)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "tenant %s: %d entries checked, chain head %d, retention cut at %d\n", t.Slug, v.Entries, v.Head, v.CutSeq)
			if v.Intact() {
				fmt.Fprintln(out, "intact")
				return nil
			}
			for _, b := range v.Breaks {
				id := "-"
				if b.EntryID != uuid.Nil {
					id = b.EntryID.String()
				}
				fmt.Fprintf(out, "broken at %d (entry %s): %s\n", b.Seq, id, b.Reason)
			}
			return fmt.Errorf("the audit chain of tenant %s is broken in %d places", t.Slug, len(v.Breaks))
		},
	}
	verify.Flags().StringVar(&tenant, "tenant", "", "tenant id or slug")
	verify.Flags().IntVar(&maxBreaks, "max-breaks", 10, "stop after this many broken links")
	cmd.AddCommand(verify)
	return cmd
}

// openTenant loads the configuration, opens the database and looks the
// tenant up by id or slug; the caller closes the database.
func openTenant(cmd *cobra.Command, tenant string) (*config.Config, *store.DB, *store.Tenant, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	db, err := store.Open(cmd.Context(), cfg.Database)
	if err != nil {
		return nil, nil, nil, err
	}
	var t *store.Tenant
	if id, perr := uuid.Parse(tenant); perr == nil {
		t, err = db.Tenants().Get(cmd.Context(), id)
	} else {
		t, err = db.Tenants().GetBySlug(cmd.Context(), tenant)
	}
	if err != nil {
		db.Close()
		return nil, nil, nil, fmt.Errorf("tenant %q: %w", tenant, err)
	}
	return cfg, db, t, nil
}
