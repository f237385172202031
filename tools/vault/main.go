// Command vault is HashiCorp Vault's CLI and server, built for avb's tests
// and development stack (never linked into avb).
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
