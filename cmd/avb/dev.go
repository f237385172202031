package main

import "github.com/spf13/cobra"

func devCmd() *cobra.Command {
	return &cobra.Command{Use: "dev", Short: "Run the whole platform locally"}
}
