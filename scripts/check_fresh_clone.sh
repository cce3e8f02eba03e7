#!/usr/bin/env bash
# Clone the committed project into an empty temporary folder and run `make test` there:
# what a new user gets, with nothing beside the checkout and nothing installed by hand.
# Usage: scripts/check_fresh_clone.sh [REVISION]   (default: HEAD)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
revision="${1:-HEAD}"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
git clone --quiet --no-hardlinks "$repo" "$workdir/crawler"
git -C "$workdir/crawler" checkout --quiet "$revision"
cd "$workdir/crawler"
echo "fresh clone of $(git rev-parse --short HEAD) in $workdir/crawler (nothing beside it)"
ls -A "$workdir"
make test
