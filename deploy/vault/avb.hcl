# Policy of the avb API server (AppRole role "avb"): least privilege.
# The tests load this file into a real Vault and run avb under it, so a
# missing grant fails a test.

# Its platform secrets (KV v2 at "secret", AVB_VAULT_KV_PATH avb/platform).
path "secret/data/avb/platform" {
  capabilities = ["read"]
}

# Database credentials of the avb-app role (AVB_VAULT_DATABASE_ROLE), and
# renewing their leases.
path "database/creds/avb-app" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}

# Its own token: renew and look up (the default policy grants these too).
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# Its TLS certificate from the PKI engine's avb-server role
# (AVB_VAULT_PKI_ROLE).
path "pki/issue/avb-server" {
  capabilities = ["update"]
}

# Tenant secrets: encrypt, decrypt and rewrap with the derived Transit key
# avb-tenant-secrets (AVB_VAULT_TRANSIT_KEY), and read its latest version.
# Rotating the key is an operator's act, not avb's.
path "transit/encrypt/avb-tenant-secrets" {
  capabilities = ["update"]
}
path "transit/decrypt/avb-tenant-secrets" {
  capabilities = ["update"]
}
path "transit/rewrap/avb-tenant-secrets" {
  capabilities = ["update"]
}
path "transit/keys/avb-tenant-secrets" {
  capabilities = ["read"]
}
