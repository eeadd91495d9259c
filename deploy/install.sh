#!/bin/sh
# Install or update openmailserver as a systemd service. Idempotent: a second run
# changes nothing and says so. Run as root from a checkout: sudo deploy/install.sh
#
# What it sets up (paths under --root when given):
#   user     openmailserver (system user and group, no login, no home)
#   PREFIX   /opt/openmailserver/venv: a venv with openmailserver and its pinned dependencies
#   config   /etc/openmailserver/openmailserver.toml, written once, never overwritten
#   data     /var/lib/openmailserver (0750, the service user's); logs in /var/log/openmailserver
#   unit     /etc/systemd/system/openmailserver.service, enabled and started
#   init     `openmailserver init` as the service user: database, TLS certificate, DKIM key,
#            and the admin API key, printed once
set -eu

PROG=install.sh
SERVICE=openmailserver
UNIT_NAME=openmailserver.service
CONF_DIR=/etc/openmailserver
CONF=$CONF_DIR/openmailserver.toml
DATA_DIR=/var/lib/openmailserver
LOG_DIR=/var/log/openmailserver
UNIT_DIR=/etc/systemd/system
DEFAULT_PREFIX=/opt/openmailserver

usage() {
    cat <<EOF
usage: $PROG [options]

  --root DIR       install everything under DIR as if it were / (scratch installs, tests);
                   implies nothing is started. The venv there runs in place only.
  --prefix DIR     where the venv goes (default $DEFAULT_PREFIX; the venv is PREFIX/venv)
  --source DIR     the openmailserver checkout to install (default: this script's checkout)
  --python PATH    Python >= 3.11 used to create the venv (default: python3)
  --hostname NAME  mail host name written into a new config (default: hostname -f)
  --no-start       do not enable or start the service
  --no-user        do not create the system user (scratch roots); files stay owned by the caller
  -h, --help       this text
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }

ROOT=
PREFIX=$DEFAULT_PREFIX
SOURCE=
PYTHON=python3
MAILHOST=
START=1
CREATE_USER=1

need() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case $1 in
        --root) need "$@"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --prefix) need "$@"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --source) need "$@"; SOURCE=$2; shift 2 ;;
        --source=*) SOURCE=${1#*=}; shift ;;
        --python) need "$@"; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --hostname) need "$@"; MAILHOST=$2; shift 2 ;;
        --hostname=*) MAILHOST=${1#*=}; shift ;;
        --no-start) START=0; shift ;;
        --no-user) CREATE_USER=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

case $PREFIX in /*) ;; *) die "--prefix must be an absolute path" ;; esac
PREFIX=${PREFIX%/}
VENV=$PREFIX/venv
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd -P)
    [ "$ROOT" = / ] && ROOT=
fi
if [ -z "$SOURCE" ]; then
    SOURCE=$(cd "$(dirname "$0")/.." && pwd -P)
else
    SOURCE=$(cd "$SOURCE" && pwd -P) || die "--source $SOURCE is not a directory"
fi
for f in pyproject.toml constraints.txt systemd/$UNIT_NAME openmailserver/__init__.py; do
    [ -f "$SOURCE/$f" ] || die "$SOURCE is not an openmailserver checkout (no $f)"
done
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0), or use --root DIR for a scratch install"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install python3 (>= 3.11) and python3-venv"
"$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$PYTHON must be Python >= 3.11 with the venv module (Debian: apt-get install python3-venv)"
# The venv links to this interpreter; the unit's ProtectHome=true hides /home and /root.
case $("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.base_prefix))') in
    /root|/root/*|/home|/home/*|/run/user/*)
        die "$PYTHON lives under a home directory, which the service cannot see (ProtectHome=true); use a system Python: --python /usr/bin/python3" ;;
esac

# Paths as seen by this script (under --root) and by the service.
r() { printf '%s%s' "$ROOT" "$1"; }

# A new config needs the mail host name; check it before changing anything.
if [ ! -e "$(r "$CONF")" ]; then
    [ -n "$MAILHOST" ] || MAILHOST=$(hostname -f 2>/dev/null || hostname 2>/dev/null || true)
    case $MAILHOST in
        *[!A-Za-z0-9.-]* | .* | *. | *..*) die "'$MAILHOST' is not a valid host name; pass --hostname mail.example.org" ;;
        *.*) ;;
        *) die "'$MAILHOST' is not a fully qualified host name; pass --hostname mail.example.org (the name your MX record will point to)" ;;
    esac
fi

CHANGES=0
changed() { CHANGES=$((CHANGES + 1)); echo "  changed  $*"; }
kept() { echo "  ok       $*"; }
skipped() { echo "  skipped  $*"; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

echo "openmailserver install: source $SOURCE -> ${ROOT:-/} (prefix $PREFIX)"

# ---- the system user ----------------------------------------------------------------
OWNER=   # uid:gid of the service user, when there is one
user_entry() {
    if [ -n "$ROOT" ]; then
        grep "^$SERVICE:" "$ROOT/etc/passwd" 2>/dev/null || true
    else
        getent passwd "$SERVICE" || true
    fi
}
if [ "$CREATE_USER" = 0 ]; then
    skipped "system user $SERVICE (--no-user)"
else
    if [ -n "$(user_entry)" ]; then
        kept "system user $SERVICE exists"
    else
        if [ -n "$ROOT" ]; then
            [ -f "$ROOT/etc/passwd" ] || die "$ROOT/etc/passwd does not exist; use --no-user for a bare scratch root"
            set -- --root "$ROOT"
        else
            set --
        fi
        useradd "$@" --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "openmailserver mail server" "$SERVICE"
        changed "created system user $SERVICE"
    fi
    OWNER=$(user_entry | awk -F: '{print $3 ":" $4}')
fi

# ---- directories --------------------------------------------------------------------
# ensure_dir PATH MODE OWNER(uid:gid or empty)
ensure_dir() {
    p=$(r "$1")
    if [ ! -d "$p" ]; then
        mkdir -p "$p"
        chmod "$2" "$p"
        [ -z "$3" ] || chown "$3" "$p"
        changed "created $1 (mode $2${3:+, owner $SERVICE})"
        return
    fi
    want_mode=$(printf '%o' "0$2")
    fix=
    [ "$(stat -c %a "$p")" = "$want_mode" ] || { chmod "$2" "$p"; fix="mode $2"; }
    if [ -n "$3" ] && [ "$(stat -c %u:%g "$p")" != "$3" ]; then
        chown "$3" "$p"
        fix="${fix:+$fix, }owner $SERVICE"
    fi
    if [ -n "$fix" ]; then changed "fixed $1 ($fix)"; else kept "$1"; fi
}
ensure_dir "$PREFIX" 755 ""
ensure_dir "$CONF_DIR" 755 ""
ensure_dir "$DATA_DIR" 750 "$OWNER"
ensure_dir "$LOG_DIR" 750 "$OWNER"
# The daemon writes its JSON log to data_dir/logs; point that at /var/log/openmailserver
# (relative, so the link also works inside a --root tree).
logs_link=$(r "$DATA_DIR/logs")
if [ -L "$logs_link" ] && [ "$(readlink "$logs_link")" = ../../log/openmailserver ]; then
    kept "$DATA_DIR/logs -> $LOG_DIR"
elif [ -e "$logs_link" ] || [ -L "$logs_link" ]; then
    kept "$DATA_DIR/logs (left as it is: not the link to $LOG_DIR that a fresh install makes)"
else
    ln -s ../../log/openmailserver "$logs_link"
    [ -z "$OWNER" ] || chown -h "$OWNER" "$logs_link"
    changed "linked $DATA_DIR/logs -> $LOG_DIR"
fi

# ---- the venv -----------------------------------------------------------------------
# The package is built from a copy of exactly the files that make it, so the checkout
# gets no build/ or egg-info droppings; the fingerprint of those files and the Python
# version decide whether there is anything to install.
fingerprint() {
    "$PYTHON" - "$SOURCE" <<'PY'
import hashlib, os, sys
src = sys.argv[1]
h = hashlib.sha256(sys.version.encode())
paths = [n for n in os.listdir(src) if os.path.isfile(os.path.join(src, n)) and not n.startswith(".")]
for top, dirs, files in os.walk(os.path.join(src, "openmailserver")):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    paths += [os.path.relpath(os.path.join(top, f), src) for f in files if not f.endswith((".pyc", ".pyo"))]
for rel in sorted(paths):
    h.update(rel.encode() + b"\0")
    with open(os.path.join(src, rel), "rb") as fh:
        h.update(hashlib.sha256(fh.read()).digest())
print(h.hexdigest())
PY
}
venv_dir=$(r "$VENV")
# The venv's Python, isolated (-I) from the caller's directory and PYTHON* variables, so that
# `import openmailserver` finds the installed package even when run from a checkout.
vpy() { "$venv_dir/bin/python" -I "$@"; }
stamp=$venv_dir/.openmailserver-source
want=$(fingerprint)
VENV_CHANGED=0
if [ ! -x "$venv_dir/bin/python" ] || ! vpy -c '' 2>/dev/null; then
    rm -rf "$venv_dir"
    "$PYTHON" -m venv "$venv_dir"
    changed "created venv $VENV"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && vpy -c 'import openmailserver' 2>/dev/null; then
    kept "venv $VENV (openmailserver $(vpy -c 'import openmailserver; print(openmailserver.__version__)'), source unchanged)"
else
    mkdir "$TMP/src"
    find "$SOURCE" -mindepth 1 -maxdepth 1 -type f ! -name '.*' -exec cp -p {} "$TMP/src/" \;
    (cd "$SOURCE" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' openmailserver) | tar -xf - -C "$TMP/src"
    # Exact pins: constraints.txt fixes every dependency's version. pip always rebuilds and
    # reinstalls a local directory, so changed code of the same version lands too.
    if ! vpy -m pip install --disable-pip-version-check --no-input --quiet \
            -c "$SOURCE/constraints.txt" "$TMP/src" >"$TMP/pip.log" 2>&1; then
        tail -n 40 "$TMP/pip.log" >&2
        die "pip install into $VENV failed (log above)"
    fi
    echo "$want" >"$stamp"
    VENV_CHANGED=1
    changed "installed openmailserver $(vpy -c 'import openmailserver; print(openmailserver.__version__)') and pinned dependencies into $VENV"
fi
OMS=$venv_dir/bin/openmailserver

# ---- the config file (written once) ---------------------------------------------------
conf=$(r "$CONF")
if [ -e "$conf" ]; then
    kept "$CONF (kept as it is; never overwritten)"
else
    vpy - "$MAILHOST" "$DATA_DIR" >"$TMP/config.toml" <<'PY'
import json, sys, textwrap
from dataclasses import fields
from pathlib import Path

from openmailserver.config import DEV_PROFILE, Settings

hostname, data_dir = sys.argv[1:3]
written = {"data_dir": data_dir, "hostname": hostname}
notes = {
    "data_dir": "The systemd unit sets OPENMAILSERVER_DATA_DIR to this path (its sandbox lets the "
                "service write only there); change both together.",
    "hostname": "Set by the installer from this machine's name: make it the name your MX record "
                "points to, with a PTR record for this server's address.",
    "tls_cert": "For Let's Encrypt: fullchain.pem and privkey.pem, readable by the openmailserver "
                "user (e.g. copied by a certbot deploy hook), then `systemctl reload openmailserver`.",
}


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]"
    return json.dumps(str(v))


def comment(text):
    return textwrap.fill(text, 88, initial_indent="# ", subsequent_indent="# ")


out = [comment("openmailserver settings. Written once by deploy/install.sh; later installs never "
               "overwrite it. Every setting is listed with its documentation; those commented out "
               "have their default value. Apply changes with `systemctl restart openmailserver`, or "
               "`systemctl reload openmailserver` for tls_cert, tls_key, log_level and "
               "debug_api_enabled."),
       comment("Order of precedence: defaults < this file < OPENMAILSERVER_<NAME> environment "
               "variables (the unit sets OPENMAILSERVER_DATA_DIR) < --set NAME=VALUE flags. "
               "`openmailserver config show` prints the effective settings."), ""]
for f in fields(Settings):
    out.append(comment(f.metadata["doc"]))
    if f.name in notes:
        out.append(comment(notes[f.name]))
    if f.name in written:
        out.append(f"{f.name} = {value(written[f.name])}")
    else:
        default = f.default if not isinstance(f.default, Path) else str(f.default)
        out.append(f"# {f.name} = {value(default)}")
    out.append("")
print("\n".join(out), end="")
PY
    chmod 640 "$TMP/config.toml"
    [ -z "$OWNER" ] || chgrp "${OWNER#*:}" "$TMP/config.toml"
    mv "$TMP/config.toml" "$conf"
    changed "wrote $CONF (hostname $MAILHOST)"
fi

# ---- the unit -----------------------------------------------------------------------
unit=$(r "$UNIT_DIR/$UNIT_NAME")
sed "s#$DEFAULT_PREFIX/venv/#$VENV/#g" "$SOURCE/systemd/$UNIT_NAME" >"$TMP/$UNIT_NAME"
UNIT_CHANGED=0
if [ -f "$unit" ] && cmp -s "$TMP/$UNIT_NAME" "$unit"; then
    kept "$UNIT_DIR/$UNIT_NAME"
else
    mkdir -p "$(dirname "$unit")"
    what=installed
    [ -f "$unit" ] && what=updated
    cp "$TMP/$UNIT_NAME" "$unit"
    chmod 644 "$unit"
    UNIT_CHANGED=1
    changed "$what $UNIT_DIR/$UNIT_NAME"
fi

# ---- openmailserver init, as the service user -------------------------------------------
# The settings the service will see: the config file, and the data dir from the unit.
if [ -n "$OWNER" ] && [ "$(id -u)" = 0 ]; then
    set -- setpriv --reuid="${OWNER%:*}" --regid="${OWNER#*:}" --clear-groups --
else
    set --
fi
if ! (cd / && OPENMAILSERVER_DATA_DIR=$(r "$DATA_DIR") "$@" "$OMS" init --config "$conf" --json \
        >"$TMP/init.json" 2>"$TMP/init.err"); then
    cat "$TMP/init.json" "$TMP/init.err" >&2
    die "openmailserver init failed (settings: $CONF)"
fi
vpy - "$TMP/init.json" >"$TMP/init.txt" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for item in report["created"]:
    print(f"  changed  init: created {item}")
if report["admin_key"]:
    print("  changed  init: generated the admin API key")
    print(f"\n  Admin API key (shown once, stored only as a hash):\n    {report['admin_key']}\n")
if not report["changed"]:
    print("  ok       data directory initialised (database, TLS certificate, DKIM key, admin key)")
PY
cat "$TMP/init.txt"
CHANGES=$((CHANGES + $(grep -c '^  changed' "$TMP/init.txt" || true)))

# ---- systemd ----------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
    skipped "systemctl: nothing enabled or started in a --root install"
elif [ ! -d /run/systemd/system ]; then
    skipped "systemctl: systemd is not running on this machine; start the daemon with: $VENV/bin/openmailserver serve --config $CONF"
else
    if [ "$UNIT_CHANGED" = 1 ]; then
        systemctl daemon-reload
        changed "systemctl daemon-reload"
    fi
    if [ "$START" = 0 ]; then
        skipped "enabling and starting $UNIT_NAME (--no-start)"
    else
        if systemctl is-enabled --quiet "$UNIT_NAME"; then
            kept "$UNIT_NAME enabled"
        else
            systemctl enable --quiet "$UNIT_NAME"
            changed "enabled $UNIT_NAME"
        fi
        if ! systemctl is-active --quiet "$UNIT_NAME"; then
            systemctl start "$UNIT_NAME"
            changed "started $UNIT_NAME"
        elif [ "$VENV_CHANGED" = 1 ] || [ "$UNIT_CHANGED" = 1 ]; then
            systemctl restart "$UNIT_NAME"
            changed "restarted $UNIT_NAME (new code or unit)"
        else
            kept "$UNIT_NAME running"
        fi
    fi
fi

if [ "$CHANGES" = 0 ]; then
    echo "openmailserver install: nothing changed (already installed and up to date)"
else
    echo "openmailserver install: done, $CHANGES change(s)"
fi
if [ -z "$ROOT" ]; then
    echo "next: edit $CONF (then systemctl restart $SERVICE), publish the DNS records, and run the CLI"
    echo "as the service user, e.g.: runuser -u $SERVICE -- $VENV/bin/openmailserver doctor"
fi
