#!/usr/bin/env bash
# ensure-services.sh: make sure the speech libraries are installed and
# PostgreSQL (127.0.0.1:5432, user postgres, trust) and Redis (127.0.0.1:6379)
# answer, for `make dev` and `make test`, and that curl, jq and espeak-ng are
# there for the README's examples (`ensure-services.sh test` adds chromium for the tests).
# Uses running servers when there are some; otherwise installs the Debian
# packages (as root) and starts local servers whose data lives under .data/.
# When it cannot, it stops with the one command to run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/.data"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
is_root() { [ "$(id -u)" -eq 0 ]; }
apt_install() {
  if ! is_root; then
    echo "missing: $*. Run:  sudo apt-get install -y $*" >&2
    exit 1
  fi
  echo "installing $* (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
wait_port() {
  for _ in $(seq 1 100); do answers "$1" && return 0; sleep 0.1; done
  return 1
}

ensure_postgres() {
  answers 5432 && return 0
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
  fi
  # A Debian cluster: start it the way the distribution documents.
  if is_root && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start 2>/dev/null || true
    wait_port 5432 && { echo "started the Debian PostgreSQL cluster"; return 0; }
  fi
  # Otherwise a cluster of the project's own under .data/postgres (trust auth).
  bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
  pgdata="$data/postgres"
  run=()
  if is_root; then run=(runuser -u postgres --); fi
  mkdir -p "$data"
  if [ ! -s "$pgdata/PG_VERSION" ]; then
    mkdir -p "$pgdata"
    if is_root; then chown postgres "$pgdata"; fi
    "${run[@]}" "$bindir/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
  fi
  "${run[@]}" "$bindir/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -o "-p 5432 -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
  wait_port 5432 || { echo "PostgreSQL did not start; see $pgdata/server.log" >&2; exit 1; }
  "${run[@]}" "$bindir/psql" -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 ||
    "${run[@]}" "$bindir/psql" -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null
  echo "started PostgreSQL under $pgdata"
}

ensure_redis() {
  answers 6379 && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$data/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$data/redis" --logfile "$data/redis/redis.log"
  wait_port 6379 || { echo "Redis did not start; see $data/redis/redis.log" >&2; exit 1; }
  echo "started Redis (data dir $data/redis)"
}

# The embedded speech providers link against Debian's libraries (cgo).
ensure_speech() {
  local need=()
  pkg-config --exists pocketsphinx sphinxbase 2>/dev/null || need+=(libpocketsphinx-dev libsphinxbase-dev)
  [ -f /usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict ] || need+=(pocketsphinx-en-us)
  pkg-config --exists espeak-ng 2>/dev/null || need+=(libespeak-ng-dev)
  command -v pkg-config >/dev/null || need+=(pkg-config)
  if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi
}

# The README's examples use curl, jq and espeak-ng (to say something to the
# agent); the tests also drive the console in headless Chromium and call avb
# from baresip, a real softphone.
ensure_tools() {
  local need=()
  command -v curl >/dev/null || need+=(curl)
  command -v jq >/dev/null || need+=(jq)
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  if [ "${1:-}" = test ]; then command -v chromium >/dev/null || need+=(chromium); command -v baresip >/dev/null || need+=(baresip); fi
  if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi
}

ensure_speech
ensure_tools "${1:-}"
ensure_postgres
ensure_redis
