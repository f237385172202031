package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/store"
)

func migrateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, revert or list database migrations (embedded in this binary)",
	}
	var steps int
	up := &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDB(cmd, func(db *store.DB) error {
				applied, err := store.MigrateUp(cmd.Context(), db.Pool)
				for _, m := range applied {
					fmt.Fprintf(cmd.OutOrStdout(), "applied  %04d_%s\n", m.Version, m.Name)
				}
				if err == nil && len(applied) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "schema is up to date")
				}
				return err
			})
		},
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Revert the newest applied migration (or --steps of them)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if steps < 1 {
				return fmt.Errorf("--steps must be at least 1")
			}
			return withDB(cmd, func(db *store.DB) error {
				reverted, err := store.MigrateDown(cmd.Context(), db.Pool, steps)
				for _, m := range reverted {
					fmt.Fprintf(cmd.OutOrStdout(), "reverted %04d_%s\n", m.Version, m.Name)
				}
				return err
			})
		},
	}
	down.Flags().IntVar(&steps, "steps", 1, "how many migrations to revert")
	status := &cobra.Command{
		Use:   "status",
		Short: "List migrations and when each was applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDB(cmd, func(db *store.DB) error {
				all, err := store.MigrationStatuses(cmd.Context(), db.Pool)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "VERSION\tNAME\tAPPLIED")
				for _, m := range all {
					at := "pending"
					if !m.AppliedAt.IsZero() {
						at = m.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(w, "%04d\t%s\t%s\n", m.Version, m.Name, at)
				}
				return w.Flush()
			})
		},
	}
	cmd.AddCommand(up, down, status)
	return cmd
}

func withDB(cmd *cobra.Command, fn func(*store.DB) error) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if cfg.Database.MigrationURL == "" {
		return fmt.Errorf("AVB_DATABASE_MIGRATION_URL is required for migrations (the schema owner's URL)")
	}
	db, err := store.Open(cmd.Context(), store.MigrationConfig(cfg.Database))
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(db)
}
