// Command avb is the AgentVoiceBox binary: the API server, migrations, the
// local development platform and operator tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/app"
	"github.com/agentvoicebox/avb/platform/config"
	"github.com/agentvoicebox/avb/platform/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := root().ExecuteContext(ctx)
	var cerr *config.Error
	switch {
	case errors.As(err, &cerr):
		fmt.Fprintln(os.Stderr, "avb:", cerr)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "avb:", err)
		os.Exit(1)
	}
}

func root() *cobra.Command {
	cmd := &cobra.Command{
		Use:           "avb",
		Short:         "AgentVoiceBox: the realtime voice-agent platform",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       app.Version,
	}
	cmd.AddCommand(serveCmd(), workerCmd(), migrateCmd(), configCmd(), devCmd(), apikeyCmd(), auditCmd(), callCmd(), loadtestCmd(), healthCmd(), ttsWorkerCmd())
	return cmd
}

// loadConfig reads and validates the environment once for a command.
func loadConfig() (*config.Config, error) {
	return config.FromEnv()
}

// loadConfigAndLogger is loadConfig plus the process logger it configures.
func loadConfigAndLogger() (*config.Config, *slog.Logger, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	return cfg, logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level), nil
}

func serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Serve the API (Connect, gRPC, gRPC-Web), health and metrics on AVB_HTTP_ADDR",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfigAndLogger()
			if err != nil {
				return err
			}
			a, err := app.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			defer a.Close()
			return a.Serve(cmd.Context(), nil)
		},
	}
}
