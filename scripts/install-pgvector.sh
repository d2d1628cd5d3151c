#!/usr/bin/env bash
# Installs pgvector 0.8 into the local PostgreSQL from Debian trixie's source package.
# Bookworm has no pgvector package; this builds it against the server's own headers.
# Idempotent: does nothing when the extension is already available to the server.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)}"
PG_MAJOR="${PG_MAJOR:-15}"
SHAREDIR="$(/usr/lib/postgresql/"$PG_MAJOR"/bin/pg_config --sharedir 2>/dev/null || echo /usr/share/postgresql/"$PG_MAJOR")"
PKGLIBDIR="$(/usr/lib/postgresql/"$PG_MAJOR"/bin/pg_config --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/"$PG_MAJOR"/lib)"

WORK="${PGVECTOR_WORKDIR:-/tmp/memory-sync-pgvector}"
# Written beside vector.so by this script: a build of ours without it used the Makefile's -march=native.
MARK="$PKGLIBDIR/vector.memory-sync-portable"
if [ -f "$SHAREDIR/extension/vector.control" ] && [ -f "$PKGLIBDIR/vector.so" ]; then
  if [ -f "$MARK" ] || ! ls -d "$WORK"/src/pgvector-*/ >/dev/null 2>&1 || [ -n "${PGVECTOR_KEEP:-}" ]; then
    echo "pgvector: already installed ($(grep default_version "$SHAREDIR/extension/vector.control"))"
    exit 0
  fi
  echo "pgvector: rebuilding an earlier build of this script (-march=native) as the portable build"
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
mkdir -p "$WORK/lists/partial" "$WORK/src"
echo "deb-src http://deb.debian.org/debian trixie main" > "$WORK/sources.list"
APT_OPTS=(-o Dir::Etc::SourceList="$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$WORK/lists")

$SUDO apt-get "${APT_OPTS[@]}" update -qq
if ! dpkg -s "postgresql-server-dev-$PG_MAJOR" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-$PG_MAJOR" make gcc dpkg-dev >/dev/null
fi
cd "$WORK/src"
if ! ls -d pgvector-*/ >/dev/null 2>&1; then
  # Run by root, apt warns that the download is unsandboxed; harmless here.
  apt-get "${APT_OPTS[@]}" source --download-only pgvector 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
  dpkg-source -x --skip-patches pgvector_*.dsc >/dev/null 2>&1 || {
    tar xf pgvector_*.orig.tar.*
  }
fi
cd "$(ls -d pgvector-*/ | head -n1)"
# The portable build (OPTFLAGS=""), as distribution packages and pgvector's Docker image make it: its
# distance loop dispatches to the same `fma` clone on every x86-64 CPU with FMA, so `<=>` sums in one
# order whatever CPU this runs on. The Makefile's default, -march=native, sums in 16 lanes on an AVX-512
# CPU and in 8 elsewhere; memory-sync detects either, but the tests compare bits with one order.
make -s clean >/dev/null 2>&1 || true
make -s OPTFLAGS="" PG_CONFIG=/usr/lib/postgresql/"$PG_MAJOR"/bin/pg_config >/dev/null
$SUDO make -s OPTFLAGS="" PG_CONFIG=/usr/lib/postgresql/"$PG_MAJOR"/bin/pg_config install >/dev/null
echo "OPTFLAGS=\"\" $(date -u +%FT%TZ)" | $SUDO tee "$MARK" >/dev/null
echo "pgvector: installed $(grep default_version "$SHAREDIR/extension/vector.control")"
