#!/usr/bin/env bash
# Start a private PostgreSQL cluster for radseal's receipt index (tests, CI, a fleet drill).
#
#   scripts/start-postgres.sh DIR [PORT] [DB] [USER]
#
# Initialises DIR/data with initdb on first use, starts it with pg_ctl on
# 127.0.0.1:PORT (default 55432; the socket lives in DIR too), and creates the
# database DB (default radseal) owned by the role USER (default radseal), who
# connects over loopback without a password (trust on 127.0.0.1 only: a test
# cluster, not a production one). Idempotent: a running cluster is left
# running, an existing database kept. Run as root, the cluster belongs to the
# 'postgres' system user (PostgreSQL refuses to run as root). Installs
# Debian's postgresql if it is missing. Prints the index URL on its last line:
#   postgresql://USER@127.0.0.1:PORT/DB
# Stop it with: pg_ctl -D DIR/data stop  (as the same user), or scripts/stop-postgres.sh DIR
set -euo pipefail
dir=${1:?usage: start-postgres.sh DIR [PORT] [DB] [USER]}
port=${2:-55432}
db=${3:-radseal}
user=${4:-radseal}

bindir=""
for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  [ -x "$candidate/initdb" ] && { bindir=$candidate; break; }
done
if [ -z "$bindir" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  for candidate in $(ls -d /usr/lib/postgresql/*/bin | sort -V -r); do
    [ -x "$candidate/initdb" ] && { bindir=$candidate; break; }
  done
fi
[ -n "$bindir" ] || { echo "start-postgres.sh: error: PostgreSQL's initdb not found" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
as_owner() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
  # the postgres user must be able to reach DIR: let it own DIR (a folder made for this cluster)
  chown postgres:postgres "$dir"
  chmod 700 "$dir"
  as_owner() { runuser -u postgres -- "$@"; }
fi

if [ ! -s "$dir/data/PG_VERSION" ]; then
  as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=trust \
    --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { echo "start-postgres.sh: error: initdb failed, see $dir/initdb.log" >&2; exit 1; }
fi

if ! as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on" >/dev/null \
    || { echo "start-postgres.sh: error: PostgreSQL did not start, see $dir/postgres.log" >&2; exit 1; }
fi

psql_() { as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ -z "$(psql_ -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" ]; then
  psql_ -c "CREATE ROLE \"$user\" LOGIN"
fi
if [ -z "$(psql_ -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
  psql_ -c "CREATE DATABASE \"$db\" OWNER \"$user\""
fi
echo "postgresql://$user@127.0.0.1:$port/$db"
