#!/bin/sh
# Deploy a configuration to a running flex-gateway with zero downtime, and
# roll it back if the gateway refuses it. Runs on the gateway's host (a CI
# job reaches it by ssh); the same steps anywhere:
#
#   1. validate the new files (nothing is touched if they are invalid);
#   2. plan them against the running gateway: no change -> done; listener
#      or process changes -> a binary upgrade is needed;
#   3. keep a copy of the current files, then put the new ones in place one
#      file at a time, each written beside its target under a hidden name
#      and renamed over it (the gateway never reads a half-written file);
#      files no longer in the new set are removed last;
#   4. the gateway's file watcher reloads (hot, no connection dropped); when
#      the plan said so, run the upgrade command (`systemctl reload
#      flex-gateway`: the new process takes the sockets over);
#   5. wait until the gateway has applied exactly these files, or refused
#      them; refused (or an upgrade that failed) -> restore the previous
#      files, wait until they serve again, exit 3.
#
# Usage: deploy.sh NEW_DIR CONF_DIR
# Environment:
#   FLEXGW       the flex-gateway binary (default: flex-gateway)
#   ADMIN        the gateway's admin address (default: 127.0.0.1:9901)
#   UPGRADE_CMD  run when the plan needs a binary upgrade
#                (default: systemctl reload flex-gateway)
#   RELOAD_CMD   run after the files are in place, for a gateway whose file
#                watcher is off (e.g. `systemctl kill -s HUP flex-gateway`;
#                default: none)
#   WAIT         seconds to wait for the gateway at each step (default: 30)
#   BACKUP_DIR   where the previous files are kept (default: CONF_DIR.previous)
# Exit: 0 deployed (or nothing to do), 1 invalid or failed before any change,
#       3 refused by the gateway and rolled back, 4 the rollback failed too.
set -eu

new=${1:?usage: deploy.sh NEW_DIR CONF_DIR}
conf=${2:?usage: deploy.sh NEW_DIR CONF_DIR}
FLEXGW=${FLEXGW:-flex-gateway}
ADMIN=${ADMIN:-127.0.0.1:9901}
UPGRADE_CMD=${UPGRADE_CMD:-systemctl reload flex-gateway}
RELOAD_CMD=${RELOAD_CMD:-}
WAIT=${WAIT:-30}
backup=${BACKUP_DIR:-${conf%/}.previous}

log() { echo "deploy: $*" >&2; }

# the configuration files under a directory, relative, one per line
config_files() {
    (cd "$1" && find . -type f \( -name '*.yaml' -o -name '*.yml' \) \
        ! -path '*/.*' | sed 's|^\./||' | sort)
}

# put the files of $1 into $2: each one atomically, then remove the rest
install_files() {
    from=$1 to=$2
    config_files "$from" | while IFS= read -r f; do
        dir=$(dirname "$to/$f")
        mkdir -p "$dir"
        tmp="$dir/.$(basename "$f").deploy.$$"
        cp "$from/$f" "$tmp"
        mv -f "$tmp" "$to/$f"
    done
    config_files "$to" | while IFS= read -r f; do
        [ -e "$from/$f" ] || rm -f "$to/$f"
    done
}

log "validating $new"
"$FLEXGW" validate -c "$new" >&2 || { log "invalid: nothing deployed"; exit 1; }

set +e
plan=$("$FLEXGW" plan -c "$new" --against-admin "$ADMIN")
code=$?
set -e
printf '%s\n' "$plan" >&2
case $code in
    0) ;;  # the effective configuration is the same; files may still differ
    2) ;;
    *) log "cannot plan against $ADMIN: nothing deployed"; exit 1 ;;
esac
upgrade=no
case $plan in *"need a binary upgrade"*) upgrade=yes ;; esac

log "keeping the current files in $backup"
rm -rf "$backup"
mkdir -p "$backup"
install_files "$conf" "$backup"

rollback() {
    log "rolling back to the previous files"
    install_files "$backup" "$conf"
    [ -z "$RELOAD_CMD" ] || sh -c "$RELOAD_CMD" || true
    if "$FLEXGW" status --admin "$ADMIN" --expect "$conf" --wait "$WAIT" >/dev/null; then
        log "rolled back: the previous configuration serves"
        exit 3
    fi
    log "ROLLBACK FAILED: check \`$FLEXGW status --admin $ADMIN\`"
    exit 4
}

log "installing the new files into $conf"
install_files "$new" "$conf"
[ -z "$RELOAD_CMD" ] || sh -c "$RELOAD_CMD"

set +e
"$FLEXGW" status --admin "$ADMIN" --expect "$conf" --wait "$WAIT" >/dev/null
code=$?
set -e
if [ "$code" -ne 0 ]; then
    "$FLEXGW" status --admin "$ADMIN" >&2 || true
    rollback
fi

if [ "$upgrade" = yes ]; then
    log "listeners or process settings changed: $UPGRADE_CMD"
    if ! sh -c "$UPGRADE_CMD"; then
        log "the upgrade failed; the old process serves"
        rollback
    fi
    if ! "$FLEXGW" status --admin "$ADMIN" --expect "$conf" --wait "$WAIT" >/dev/null; then
        "$FLEXGW" status --admin "$ADMIN" >&2 || true
        rollback
    fi
fi
log "deployed: $("$FLEXGW" status --admin "$ADMIN" | head -1)"
