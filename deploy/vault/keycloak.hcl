# Policy of Keycloak (through its Vault SPI or an agent rendering its
# configuration): its own secrets only, never avb's.

path "secret/data/keycloak/*" {
  capabilities = ["read"]
}

path "database/creds/keycloak" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
