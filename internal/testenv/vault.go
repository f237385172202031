package testenv

import (
	"context"
	"fmt"
	"net/http"
	"testing"
)

// VaultRootToken is the root token of the Vault dev server tests start.
const VaultRootToken = "avb-test-root"

// Vault returns the address (http://host:port) and root token of a Vault
// dev server shared by the test binary (in memory, unsealed). It is the
// real server, built by make tools from tools/vault.
func Vault(t testing.TB) (addr, token string) {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.vault == nil {
		hostPort := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		url := "http://" + hostPort
		ready := func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/sys/health", nil)
			if err != nil {
				return err
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("vault health: %d", res.StatusCode)
			}
			return nil
		}
		p := newProcess(t, "vault", hostPort, ready, Tool(t, "vault"), "server", "-dev",
			"-dev-root-token-id="+VaultRootToken, "-dev-listen-address="+hostPort, "-dev-no-store-token", "-log-level=warn")
		p.Start()
		shared.vault = p
	}
	return "http://" + shared.vault.Addr(), VaultRootToken
}
