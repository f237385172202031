#!/usr/bin/env bash
# tool-from-path.sh BIN NAME VERSION [VERSION-ARGS...]
# Uses a NAME already on PATH (Homebrew, a release binary, a package) when it
# reports the pinned VERSION: links it into BIN and exits 0. Otherwise exits
# 1 and the caller builds the tool from source, which always works here.
set -euo pipefail
bin=$1 name=$2 version=${3#v}
shift 3
bin_abs=$(cd "$bin" 2>/dev/null && pwd || echo "$bin")
found=""
IFS=: read -ra dirs <<<"${PATH:-}"
for d in "${dirs[@]}"; do
  [ -n "$d" ] && [ -x "$d/$name" ] || continue
  [ "$(cd "$d" && pwd)" = "$bin_abs" ] && continue # our own ./bin
  found="$d/$name"
  break
done
[ -n "$found" ] || exit 1
out=$("$found" "$@" 2>&1 | head -3 || true)
if ! grep -Eq "(^|[^0-9.])v?${version//./\\.}([^0-9.]|$)" <<<"$out"; then
  echo "$name on PATH ($found) is not $version; building $version from source instead"
  exit 1
fi
mkdir -p "$bin"
ln -sf "$found" "$bin/$name"
echo "using $name $version from PATH ($found) instead of building it"
