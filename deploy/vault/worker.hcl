# Policy of avb worker (AppRole role "avb-worker"): the same platform
# secrets (the Lago key for the usage sync, provider keys for batch speech
# jobs) and database credentials as the server; nothing else.

path "secret/data/avb/platform" {
  capabilities = ["read"]
}

path "database/creds/avb-app" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
