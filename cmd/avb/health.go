package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthCmd probes this container's own server, for a container
// HEALTHCHECK where no curl exists: it exits 0 when GET /health/ answers
// 200 within the deadline, 1 otherwise.
func healthCmd() *cobra.Command {
	var target string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when the local server's /health/ answers 200 (for container health checks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if target == "" {
				target = localHealthURL(os.Getenv)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return err
			}
			// Its own certificate names the public host, not 127.0.0.1: a
			// liveness probe checks that the server answers, not who it is.
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // see above
			res, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			defer res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("health: %s answered %d", target, res.StatusCode)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "url", "", "URL to probe (default: /health/ on AVB_HTTP_ADDR, https when avb serves TLS itself)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "deadline of the probe")
	return cmd
}

// localHealthURL is /health/ of the server this environment configures,
// reached on the loopback interface.
func localHealthURL(getenv func(string) string) string {
	addr := getenv("AVB_HTTP_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		port = "8080"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if getenv("AVB_TLS_CERT_FILE") != "" || getenv("AVB_VAULT_PKI_ROLE") != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(strings.Trim(host, "[]"), port) + "/health/"
}
