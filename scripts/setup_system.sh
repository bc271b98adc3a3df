#!/usr/bin/env bash
# System set-up: Debian packages and the TimescaleDB extension (built from Debian trixie's source
# against bookworm's PostgreSQL 15, see DESIGN.md §5). Idempotent and quick when already done.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
loom="$here/.loom"
mkdir -p "$loom"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_pkgs=()
for p in postgresql-15 postgresql-client-15 postgresql-server-dev-15 cmake gcc make libkrb5-dev chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

pg_ext_dir="$(/usr/lib/postgresql/15/bin/pg_config --sharedir)/extension"
if [ ! -f "$pg_ext_dir/timescaledb.control" ]; then
  echo "[setup] building TimescaleDB (Apache-licensed part) from Debian trixie source"
  work="$loom/build/timescaledb"
  rm -rf "$work" && mkdir -p "$work/lists/partial" "$work/src"
  mirror="$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
              grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } | grep -v security | head -n1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  echo "deb-src [trusted=yes] ${mirror%/} trixie main" > "$work/sources.list"
  aptopts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
           -o "Dir::State::Lists=$work/lists" -o "APT::Sandbox::User=root")
  apt-get "${aptopts[@]}" update -qq
  (cd "$work/src" && apt-get "${aptopts[@]}" source --download-only timescaledb >/dev/null)
  tar -xf "$work"/src/timescaledb_*.orig.tar.* -C "$work/src"
  srcdir="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb*' | head -n1)"
  (cd "$srcdir" && PATH="/usr/lib/postgresql/15/bin:$PATH" ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF \
      -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >/dev/null \
   && $SUDO make -C build -j2 install >/dev/null)
  echo "[setup] TimescaleDB installed"
fi
