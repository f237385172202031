package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/devstack"
	"github.com/agentvoicebox/avb/platform/logging"
)

func devCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform locally: checks Postgres and Redis, starts Temporal and SpiceDB, migrates, serves",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			log := logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level)
			cmd.Printf("AgentVoiceBox dev platform (profile %s)\n", cfg.Profile)
			return devstack.Run(cmd.Context(), devstack.Options{Config: cfg, Out: cmd.OutOrStdout(), Log: log})
		},
	}
}
