#!/usr/bin/env bash
# Install warpd's systemd units, the cartridge-warp user and /etc/cartridge-warp.
# Idempotent: a second run changes nothing it already did and never
# overwrites an edited configuration or secrets file.
#
#   scripts/install-systemd.sh [--root DIR] [--bindir DIR] [--no-user] [--no-reload]
#
#   --root DIR    install below DIR instead of / (packaging, tests); implies
#                 --no-user and --no-reload
#   --bindir DIR  where warpd and cartridge-warp are (default: the directory of
#                 `command -v warpd`, else /opt/cartridge-warp/bin)
#   --no-user     do not create the cartridge-warp user and group
#   --no-reload   do not run systemctl daemon-reload
set -euo pipefail

root=""
bindir=""
make_user=1
reload=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; make_user=0; reload=0; shift 2 ;;
    --bindir) bindir="${2:?--bindir needs a directory}"; shift 2 ;;
    --no-user) make_user=0; shift ;;
    --no-reload) reload=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install-systemd.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
unit_dir="$root/etc/systemd/system"
etc_dir="$root/etc/cartridge-warp"
user=cartridge-warp

if [ -z "$bindir" ]; then
  if found="$(command -v warpd 2>/dev/null)"; then bindir="$(dirname "$found")"; else bindir=/opt/cartridge-warp/bin; fi
fi
if [ "$root" = "" ] && [ ! -x "$bindir/warpd" ]; then
  echo "install-systemd.sh: note: $bindir/warpd does not exist yet; install cartridge-warp there (docs/operations.md)" >&2
fi

# 1. the user and group the daemon runs as (no login, no home of its own)
if [ "$make_user" = 1 ]; then
  getent group "$user" >/dev/null || groupadd --system "$user"
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --gid "$user" --home-dir /var/lib/cartridge-warp --no-create-home \
      --shell /usr/sbin/nologin --comment "cartridge-warp daemon" "$user"
  fi
fi

# 2. configuration: readable by the daemon's group, secrets by root only (systemd reads them)
install -d -m 0750 "$etc_dir"
if [ ! -e "$etc_dir/config.yaml" ]; then
  install -m 0640 "$here/etc/cartridge-warp/config.yaml" "$etc_dir/config.yaml"
  echo "installed $etc_dir/config.yaml (an example: edit it)"
fi
if [ ! -e "$etc_dir/env" ]; then
  (umask 077 && cat > "$etc_dir/env" <<'ENV'
# Secrets for warpd.service and warpd@.service, read by systemd (EnvironmentFile=).
# Keep this file mode 0600, owned by root.
#CARTRIDGE_WARP_SOURCE__CONNECTION_STRING=mysql://warp:secret@db1:3306
#CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING=postgresql://warp:secret@warehouse:5432/analytics
ENV
  )
  echo "installed $etc_dir/env (mode 0600: put connection strings with passwords here)"
fi
chmod 0600 "$etc_dir/env"
if [ "$make_user" = 1 ]; then
  chgrp "$user" "$etc_dir" "$etc_dir/config.yaml"
fi

# 3. the units, pointing at the installed binaries
install -d -m 0755 "$unit_dir"
for unit in warpd.service warpd@.service; do
  tmp="$(mktemp)"
  sed "s#/opt/cartridge-warp/bin#$bindir#g" "$here/systemd/$unit" > "$tmp"
  if ! cmp -s "$tmp" "$unit_dir/$unit" 2>/dev/null; then
    install -m 0644 "$tmp" "$unit_dir/$unit"
    echo "installed $unit_dir/$unit"
  fi
  rm -f "$tmp"
done
if [ -e "$unit_dir/cartridge-warp@.service" ]; then
  rm -f "$unit_dir/cartridge-warp@.service"
  echo "removed the old cartridge-warp@.service: it is warpd@.service now" \
    "(systemctl disable --now cartridge-warp@NAME; systemctl enable --now warpd@NAME)"
fi

# 4. tell systemd
if [ "$reload" = 1 ]; then
  systemctl daemon-reload
fi
echo "done. Next: edit $etc_dir/config.yaml and $etc_dir/env, then: systemctl enable --now warpd"
