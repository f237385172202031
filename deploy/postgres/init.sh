#!/bin/sh
# First start of the compose Postgres: the databases of Keycloak and SpiceDB
# (Temporal makes its own), and avb's application role with a password (avb
# migrate grants it what it needs; it is never a superuser and never
# bypasses row-level security).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE keycloak;
CREATE DATABASE spicedb;
CREATE ROLE avb_app LOGIN PASSWORD '${AVB_APP_DB_PASSWORD}' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
SQL
