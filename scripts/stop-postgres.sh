#!/usr/bin/env bash
# Stop a cluster started by scripts/start-postgres.sh DIR (fast shutdown). Idempotent.
#   scripts/stop-postgres.sh DIR [MODE]   (MODE: fast (default), immediate)
set -euo pipefail
dir=${1:?usage: stop-postgres.sh DIR [MODE]}
mode=${2:-fast}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1)
[ -n "$bindir" ] && [ -d "$dir/data" ] || exit 0
if [ "$(id -u)" -eq 0 ]; then
  runuser -u postgres -- "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null 2>&1 || true
else
  "$bindir/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null 2>&1 || true
fi
