#!/bin/sh
# Remove the openmailserver service installed by deploy/install.sh: stop and disable it,
# remove the unit, the venv and the system user. The mail, database and keys in
# /var/lib/openmailserver, the config in /etc/openmailserver and the logs in
# /var/log/openmailserver stay unless --purge is given.
set -eu

PROG=uninstall.sh
SERVICE=openmailserver
UNIT_NAME=openmailserver.service
CONF_DIR=/etc/openmailserver
DATA_DIR=/var/lib/openmailserver
LOG_DIR=/var/log/openmailserver
UNIT_DIR=/etc/systemd/system

usage() {
    cat <<EOF
usage: $PROG [options]

  --root DIR     act on an install under DIR (see install.sh --root); nothing is stopped
  --prefix DIR   where install.sh put the venv (default /opt/openmailserver)
  --purge        also delete $DATA_DIR (all mail!), $CONF_DIR and $LOG_DIR
  --keep-user    do not delete the $SERVICE system user
  -h, --help     this text
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }

ROOT=
PREFIX=/opt/openmailserver
PURGE=0
KEEP_USER=0
need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case $1 in
        --root) need "$@"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --prefix) need "$@"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --purge) PURGE=1; shift ;;
        --keep-user) KEEP_USER=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
case $PREFIX in /*) ;; *) die "--prefix must be an absolute path" ;; esac
PREFIX=${PREFIX%/}
if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
    ROOT=$(cd "$ROOT" && pwd -P)
    [ "$ROOT" = / ] && ROOT=
fi
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0), or use --root DIR"
fi
r() { printf '%s%s' "$ROOT" "$1"; }

CHANGES=0
changed() { CHANGES=$((CHANGES + 1)); echo "  changed  $*"; }
kept() { echo "  kept     $*"; }
absent() { echo "  ok       $*"; }

echo "openmailserver uninstall: ${ROOT:-/} (prefix $PREFIX)"

# ---- the service ----------------------------------------------------------------------
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    if systemctl is-active --quiet "$UNIT_NAME"; then
        systemctl stop "$UNIT_NAME"
        changed "stopped $UNIT_NAME"
    fi
    if systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
        systemctl disable --quiet "$UNIT_NAME"
        changed "disabled $UNIT_NAME"
    fi
fi
unit=$(r "$UNIT_DIR/$UNIT_NAME")
if [ -e "$unit" ]; then
    rm -f "$unit"
    changed "removed $UNIT_DIR/$UNIT_NAME"
    if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
    fi
else
    absent "no $UNIT_DIR/$UNIT_NAME"
fi
dropins=$(r "$UNIT_DIR/$UNIT_NAME.d")
if [ -d "$dropins" ]; then
    kept "$UNIT_DIR/$UNIT_NAME.d (your drop-ins; remove them yourself)"
fi

# ---- the venv ----------------------------------------------------------------------------
venv=$(r "$PREFIX/venv")
if [ -d "$venv" ]; then
    rm -rf "$venv"
    changed "removed $PREFIX/venv"
else
    absent "no $PREFIX/venv"
fi
rmdir "$(r "$PREFIX")" 2>/dev/null && changed "removed empty $PREFIX" || true

# ---- the user -----------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
    has_user=$(grep "^$SERVICE:" "$ROOT/etc/passwd" 2>/dev/null || true)
else
    has_user=$(getent passwd "$SERVICE" || true)
fi
if [ -z "$has_user" ]; then
    absent "no system user $SERVICE"
elif [ "$KEEP_USER" = 1 ]; then
    kept "system user $SERVICE (--keep-user)"
else
    if [ -n "$ROOT" ]; then userdel --root "$ROOT" "$SERVICE"; else userdel "$SERVICE"; fi
    changed "deleted system user $SERVICE"
fi

# ---- data, config, logs -------------------------------------------------------------------
for dir in "$DATA_DIR" "$CONF_DIR" "$LOG_DIR"; do
    p=$(r "$dir")
    if [ ! -e "$p" ]; then
        absent "no $dir"
    elif [ "$PURGE" = 1 ]; then
        rm -rf "$p"
        changed "deleted $dir (--purge)"
    else
        kept "$dir (delete it with --purge)"
    fi
done

if [ "$CHANGES" = 0 ]; then
    echo "openmailserver uninstall: nothing to do"
else
    echo "openmailserver uninstall: done, $CHANGES change(s)"
fi
