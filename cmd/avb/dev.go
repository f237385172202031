package main

import (
	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/devstack"
)

func devCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform locally: checks Postgres and Redis, starts Temporal and SpiceDB, migrates, serves",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfigAndLogger()
			if err != nil {
				return err
			}
			cmd.Printf("AgentVoiceBox dev platform (profile %s)\n", cfg.Profile)
			return devstack.Run(cmd.Context(), devstack.Options{Config: cfg, Out: cmd.OutOrStdout(), Log: log})
		},
	}
}
