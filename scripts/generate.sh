#!/usr/bin/env bash
# generate.sh PROTOVALIDATE_VERSION ROOT
# Vendors buf/validate/validate.proto from the pinned Go module and regenerates
# ROOT/gen from ROOT/proto. Run through `make generate`, which puts the pinned
# plugins on PATH.
set -euo pipefail
version=$1
root=$2
cd "$root"

moddir=$(go mod download -json "github.com/bufbuild/protovalidate@${version}" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$moddir" ] || { echo "could not download github.com/bufbuild/protovalidate@${version}" >&2; exit 1; }
mkdir -p third_party/proto/buf/validate
install -m 0644 "$moddir/proto/protovalidate/buf/validate/validate.proto" third_party/proto/buf/validate/validate.proto

rm -rf gen/go gen/ts
buf generate
