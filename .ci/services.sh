#!/usr/bin/env bash
# Install and start what the tests need beyond Python: PostgreSQL, Chromium and chromedriver, and
# g++ for compiled FFN inference (Debian packages). Prints `export ...` lines to eval; safe to run twice.
set -euo pipefail
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
command -v g++ >/dev/null 2>&1 || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# PostgreSQL: the distribution's default cluster, a throwaway role and database for tests.
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1{print $2}')
if [ -z "$cluster" ]; then pg_createcluster "$version" main >&2; cluster=main; fi
pg_ctlcluster "$version" "$cluster" start >&2 2>/dev/null || true
port=$(pg_lsclusters -h | awk -v c="$cluster" '$2==c{print $3; exit}')
for i in $(seq 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
su postgres -c "psql -p $port -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='connectome'\"" | grep -q 1 \
  || su postgres -c "psql -p $port -qc \"CREATE ROLE connectome LOGIN SUPERUSER PASSWORD 'connectome'\"" >&2
su postgres -c "psql -p $port -qtAc \"SELECT 1 FROM pg_database WHERE datname='connectome_test'\"" | grep -q 1 \
  || su postgres -c "createdb -p $port -O connectome connectome_test" >&2
echo "export CONNECTOME_TEST_POSTGRES_URL=postgresql+psycopg://connectome:connectome@127.0.0.1:$port/connectome_test"
