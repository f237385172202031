package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/platform/config"
)

func configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the configuration (AVB_* environment variables)",
	}
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the environment and print the effective configuration, secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "# profile %s: configuration is valid\n", cfg.Profile)
			for _, v := range config.Vars(cfg) {
				fmt.Fprintf(w, "%s\t%s\n", v.Name, v.Value())
			}
			return w.Flush()
		},
	}
	example := &cobra.Command{
		Use:   "example",
		Short: "Print .env.example: every variable with its description and defaults",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprint(cmd.OutOrStdout(), config.Example())
		},
	}
	cmd.AddCommand(check, example)
	return cmd
}
