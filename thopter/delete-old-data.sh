#!/usr/bin/env bash
# Deletes what init moved aside when the volume last belonged to another thopter: every
# /data/.thopter-old-* directory. init starts it in the background at the lowest CPU and I/O
# priority (`ionice -c 3 nice -n 19`) and never waits for it, so a huge or hostile tree (the seed's
# `rm -rf /data/*` hung on uv caches) costs the new thopter disk bandwidth at worst, never its
# start. A deletion cut short by a reboot is finished at the next boot, since init runs this again.
#
#   delete-old-data.sh
#
# Runs as root. It never follows a symbolic link (rm, chattr -R and chmod -R do not) and never
# leaves the volume's file system (--one-file-system), whatever the previous agent left there.
set -euo pipefail

data=/data
log_file=/thopter/log

log() {
  printf '%s init: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" | tee -a "$log_file"
}

delete_tree() {
  local dir=$1
  rm -rf --one-file-system -- "$dir" 2>/dev/null && return 0
  # Root passes permission bits (uv makes its cache read-only), but not the immutable and
  # append-only attributes; and a file system mounted without root's overrides may still need the
  # modes opened. Clear both, then try once more.
  chattr -R -f -ia "$dir" 2>/dev/null || true
  chmod -R u+rwX "$dir" 2>/dev/null || true
  rm -rf --one-file-system -- "$dir"
}

shopt -s nullglob
for dir in "$data"/.thopter-old-*; do
  [[ -d $dir && ! -L $dir ]] || continue
  if delete_tree "$dir"; then
    log "old data deleted (${dir#"$data"/})"
  else
    log "could not delete old data ${dir#"$data"/}: it stays out of the thopter's way, next boot tries again"
  fi
done
