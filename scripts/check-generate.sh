#!/usr/bin/env bash
# check-generate.sh PROTOVALIDATE_VERSION
# Regenerates into a scratch copy and fails if the committed gen/ (or the
# vendored validate.proto) differs from what the protos produce.
set -euo pipefail
version=$1
here=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cp -r "$here/proto" "$here/buf.yaml" "$here/buf.gen.yaml" "$scratch/"
mkdir -p "$scratch/third_party" && cp -r "$here/third_party/proto" "$scratch/third_party/"
[ -f "$here/buf.lock" ] && cp "$here/buf.lock" "$scratch/"
"$here/scripts/generate.sh" "$version" "$scratch" >/dev/null

status=0
for d in gen third_party/proto; do
  if ! diff -r -q "$scratch/$d" "$here/$d"; then status=1; fi
done
if [ "$status" -ne 0 ]; then
  echo "generated code is out of date: run  make generate  and commit the result" >&2
  exit 1
fi
echo "generated code is up to date"
