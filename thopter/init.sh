#!/usr/bin/env bash
# The thopter image's entrypoint (seed phase 3): prepares the volume and the agent's home, loads
# the egress firewall, starts sshd and the helpers, opens the tmux session `thopter` for the agent,
# writes /thopter/ready last, then stays in the foreground as the machine's main process. Each step
# appends a timestamped line to /thopter/log. thopter/README.md holds the contract with the hub.
#
# Runs as root; everything the agent runs is the unprivileged user thopter, with no capabilities
# (an empty bounding set and no_new_privs), so it can neither change the firewall nor regain root.
#
# Settings (the defaults are the image's; thopter/README.md lists them too):
#   THOPTER_SSH_PORT       sshd's port on the private network (2222)
#   THOPTER_FIREWALL       the firewall command, run as `$THOPTER_FIREWALL start` (firewall.sh here)
#   THOPTER_PM2            the pm2 command (pm2); `none` starts no helpers
#   THOPTER_SSHD           the sshd binary (/usr/sbin/sshd); `none` when the host runs sshd itself
#   THOPTER_DATA_TRIES     how often /data is checked before init gives up (30)
#   THOPTER_DATA_INTERVAL  seconds between those checks (2)
#   THOPTER_HOLD_READY     a file: while it exists, init waits before writing /thopter/ready
# All but THOPTER_SSH_PORT are for tests (test/thopter-init.test.ts, test/fixtures/machine-init.sh).
set -euo pipefail
umask 022

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)

data=/data
home=/data/thopter
workspace=$home/workspace
owner_file=$data/.thopter-owner
log_dir=/thopter/logs
log_file=/thopter/log
ready_file=/thopter/ready

role=${THOPTER_ROLE:-thopter}
ssh_port=${THOPTER_SSH_PORT:-2222}
firewall=${THOPTER_FIREWALL:-$here/firewall.sh}
pm2=${THOPTER_PM2:-pm2}
sshd=${THOPTER_SSHD:-/usr/sbin/sshd}
data_tries=${THOPTER_DATA_TRIES:-30}
data_interval=${THOPTER_DATA_INTERVAL:-2}
hold_ready=${THOPTER_HOLD_READY:-}
export PM2_HOME=/root/.pm2
# The one port the firewall lets in from outside is sshd's (firewall.sh start, and its refresh loop
# under pm2, read this from init's environment).
export FIREWALL_INBOUND_TCP_PORTS=${FIREWALL_INBOUND_TCP_PORTS:-$ssh_port}

sshd_pid=
idle_pid=
pm2_started=

log() {
  printf '%s init: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" | tee -a "$log_file"
}

stop_all() {
  if [[ -n $pm2_started ]]; then "$pm2" kill >/dev/null 2>&1 || true; fi
  as_thopter tmux kill-server >/dev/null 2>&1 || true
  if [[ -n $sshd_pid ]]; then kill "$sshd_pid" 2>/dev/null || true; fi
  if [[ -n $idle_pid ]]; then kill "$idle_pid" 2>/dev/null || true; fi
}

# The machine must not look ready: no agent, no /thopter/ready; the exit status tells Fly it failed.
fail() {
  log "FAILED: $*"
  stop_all
  exit 1
}

# Runs a command as thopter, without capabilities (not even in its bounding set) and unable to gain
# any (no_new_privs), with a clean environment plus any VAR=value given first. Files written this way
# in the agent's home cannot be turned against root by a symbolic link the agent left there.
as_thopter() {
  setpriv --reuid=thopter --regid=thopter --init-groups --inh-caps=-all --bounding-set=-all \
    --no-new-privs -- env -i HOME="$home" USER=thopter LOGNAME=thopter SHELL=/bin/bash \
    PATH="$PATH" LANG="${LANG:-C.UTF-8}" "$@"
}

# put_file MODE DEST < content: written by thopter into a temporary file, then renamed over DEST.
put_file() {
  # shellcheck disable=SC2016 # expanded by that sh, as thopter
  as_thopter sh -c 'umask 077; tmp=$(mktemp "$1.XXXXXX") && cat >"$tmp" && chmod "$2" "$tmp" && mv -f "$tmp" "$1"' \
    put_file "$2" "$1"
}

# A file Fly wrote into /tmp at creation: taken only if root owns it and it is a plain file (the
# agent may have left a link or a pipe of its own by that name in /tmp, before a reboot).
delivered() {
  [[ -f $1 && ! -L $1 && -O $1 ]]
}

start_log() {
  install -d -o root -g root -m 0755 /thopter "$log_dir"
  # A ready file from before a reboot must not make the hub think this boot is done.
  rm -f "$ready_file"
  # The hub appends its phases' lines too, as thopter.
  : >>"$log_file"
  chown thopter:thopter "$log_file"
  chmod 0644 "$log_file"
  if [[ $role == golden ]]; then
    log "boot golden claude"
  else
    log "boot ${THOPTER_ID:-?} for ${REPOSITORY:-?}#${ISSUE_NUMBER:-?}"
  fi
}

# Seed: the volume may take a moment to appear. It must be a mount (not the image's own /data,
# lost at the next boot) and must keep what is written.
check_data() {
  local try probe=$data/.thopter-probe stamp
  for ((try = 1; try <= data_tries; try++)); do
    stamp="$$ $(date +%s.%N)"
    if mountpoint -q "$data" && printf '%s\n' "$stamp" 2>/dev/null >"$probe" &&
      [[ $(cat "$probe" 2>/dev/null) == "$stamp" ]]; then
      rm -f "$probe"
      chown root:root "$data"
      chmod 0755 "$data"
      log "/data is mounted and writable"
      return 0
    fi
    ((try == 1)) && log "waiting for /data to be mounted and writable"
    ((try < data_tries)) && sleep "$data_interval"
  done
  fail "/data is not a writable mount after $data_tries tries, $data_interval s apart: is the volume attached?"
}

# Volumes outlive thopters, so /data is wiped when it last belonged to another one: the owner file
# names the machine (THOPTER_MACHINE) that last booted on it. No owner file counts as another
# owner: a volume from before owner files, or a wipe cut short before the file was written. A golden
# claude's volume is never wiped: its home is the template it exists to keep.
claim_volume() {
  if [[ $role == golden ]]; then
    log "golden claude: /data kept as it is"
    return 0
  fi
  local me=${THOPTER_MACHINE:-} previous=
  if [[ -f $owner_file && ! -L $owner_file ]]; then
    previous=$(head -c 200 "$owner_file" | tr -dc 'A-Za-z0-9_.:-')
  fi
  if [[ -n $me && $previous == "$me" ]]; then
    log "volume belongs to this thopter ($me): data kept"
    return 0
  fi
  [[ -n $me ]] || log "THOPTER_MACHINE is not set: no owner to keep the volume for, so it is wiped"
  move_aside "${previous:-no owner recorded}"
  printf '%s\n' "$me" >"$owner_file.tmp"
  chmod 0644 "$owner_file.tmp"
  mv -f "$owner_file.tmp" "$owner_file"
}

# Renames every entry of /data into one root-only directory on the same file system: one rename
# per entry, however large the tree under it, so the new thopter can start at once. Deleting comes
# later, in the background (delete-old-data.sh).
move_aside() {
  local previous=$1 trash entry moved=0
  trash=$(mktemp -d "$data/.thopter-old-XXXXXXXX")
  chmod 0700 "$trash"
  shopt -s dotglob nullglob
  for entry in "$data"/*; do
    case ${entry##*/} in
      lost+found | .thopter-old-*) continue ;;
    esac
    # Only root could have set these here; they would stop the rename.
    [[ -L $entry ]] || chattr -f -ia "$entry" 2>/dev/null || true
    mv -- "$entry" "$trash/" || fail "could not move $entry aside"
    moved=$((moved + 1))
  done
  for entry in "$data"/*; do
    case ${entry##*/} in
      lost+found | .thopter-old-*) ;;
      *) fail "$entry is still on the volume after the wipe: the old thopter's data must not reach this one" ;;
    esac
  done
  shopt -u dotglob nullglob
  if ((moved == 0)); then
    rmdir "$trash"
    log "volume is empty (last owner: $previous)"
  else
    log "volume last belonged to $previous: its $moved entries moved aside, deleted in the background"
  fi
}

delete_old_data() {
  compgen -G "$data/.thopter-old-*" >/dev/null || return 0
  ionice -c 3 -t nice -n 19 "$here/delete-old-data.sh" </dev/null &
  log "deleting old data in the background (pid $!)"
}

prepare_home() {
  install -d -o thopter -g thopter -m 0750 "$home"
  as_thopter mkdir -p "$workspace" "$home/.thopter" "$home/.local/bin"
  as_thopter chmod 0700 "$home/.thopter"
  log "home and workspace ready"

  # The status token is the observer's secret: only thopter may read it, and Fly's copy goes.
  if [[ -f /etc/thopter/status-token ]]; then
    put_file 0600 "$home/.thopter/status-token" </etc/thopter/status-token
    rm -f /etc/thopter/status-token
    log "status token installed"
  else
    log "no status token delivered"
  fi

  if delivered /tmp/.env.thopters; then
    put_file 0600 "$workspace/.env.thopters" </tmp/.env.thopters
    rm -f /tmp/.env.thopters
    log "environment file installed"
  elif [[ -e /tmp/.env.thopters || -L /tmp/.env.thopters ]]; then
    log "ignored /tmp/.env.thopters: not a plain file of root's"
  fi
  if delivered /tmp/post-checkout.sh; then
    put_file 0755 "$workspace/post-checkout.sh" </tmp/post-checkout.sh
    rm -f /tmp/post-checkout.sh
    log "post-checkout script installed"
  elif [[ -e /tmp/post-checkout.sh || -L /tmp/post-checkout.sh ]]; then
    log "ignored /tmp/post-checkout.sh: not a plain file of root's"
  fi

  put_file 0644 "$home/.bash_aliases" <"$here/bash_aliases"
  put_file 0644 "$home/.bashrc" <"$here/bashrc"
  put_file 0644 "$home/.bash_profile" <"$here/bash_profile"
  log "shell profile written (uv and ~/.local/bin on PATH, .env.thopters exported)"

  if [[ -n ${GIT_USER_NAME:-} ]]; then as_thopter git config --global user.name "$GIT_USER_NAME"; fi
  if [[ -n ${GIT_USER_EMAIL:-} ]]; then as_thopter git config --global user.email "$GIT_USER_EMAIL"; fi
  if [[ -n ${GIT_USER_NAME:-}${GIT_USER_EMAIL:-} ]]; then log "git identity set"; fi
}

load_firewall() {
  if [[ ${DANGEROUSLY_SKIP_FIREWALL:-} == I_UNDERSTAND ]]; then
    log "DANGER: DANGEROUSLY_SKIP_FIREWALL=I_UNDERSTAND: NO EGRESS FIREWALL, the agent can reach any address"
  elif [[ -n ${DANGEROUSLY_SKIP_FIREWALL:-} ]]; then
    log "DANGEROUSLY_SKIP_FIREWALL is set, but not to I_UNDERSTAND: the firewall is not skipped"
  fi
  # To a file, not through a pipe: whatever the firewall leaves running must not hold init here.
  local out=$log_dir/firewall-start.log status=0
  "$firewall" start >"$out" 2>&1 </dev/null || status=$?
  if ((status != 0)); then
    fail "the firewall did not load (exit $status: $(tail -n 1 "$out")): the agent is not started"
  fi
  log "firewall started"
}

# Fly's 6PN address: reachable only from the organization's private network (the hub). Port 22 of
# that address belongs to Fly's own SSH server (hallpass), hence THOPTER_SSH_PORT.
start_sshd() {
  if [[ $sshd == none ]]; then
    log "sshd not started here (THOPTER_SSHD=none): the machine's host runs it"
    return 0
  fi
  local address listen try
  address=$(awk '{ for (i = 2; i <= NF; i++) if ($i == "fly-local-6pn") { print $1; exit } }' /etc/hosts)
  [[ -n $address ]] || fail "no fly-local-6pn in /etc/hosts: sshd listens only on the private network, and found none"
  [[ -s /etc/thopter/ssh_host_ed25519_key ]] ||
    fail "no host key at /etc/thopter/ssh_host_ed25519_key: the hub delivers it at creation"
  if [[ $address == *:* ]]; then listen="[$address]:$ssh_port"; else listen="$address:$ssh_port"; fi
  install -d -o root -g root -m 0755 /run/sshd
  "$sshd" -t -f "$here/sshd_config" -o "ListenAddress=$listen" || fail "sshd refuses its configuration"
  "$sshd" -D -e -f "$here/sshd_config" -o "ListenAddress=$listen" </dev/null &
  sshd_pid=$!
  # Listening, or dead (the address may not be up yet: the supervisor starts it again).
  for ((try = 0; try < 100; try++)); do
    kill -0 "$sshd_pid" 2>/dev/null || break
    if (exec 3<>"/dev/tcp/$address/$ssh_port") 2>/dev/null; then
      log "sshd listening on $listen"
      return 0
    fi
    sleep 0.1
  done
  log "sshd is not listening on $listen yet"
}

start_helpers() {
  if [[ $pm2 == none ]]; then
    log "pm2 not started (THOPTER_PM2=none): no observer, session log or firewall refresh"
    return 0
  fi
  "$pm2" start "$here/ecosystem.config.cjs" >>"$log_dir/pm2-start.log" 2>&1 </dev/null ||
    fail "pm2 could not start the helpers (see $log_dir/pm2-start.log)"
  pm2_started=1
  if [[ $role == golden ]]; then
    log "pm2 started the helpers (golden claude: no observer)"
  else
    log "pm2 started the helpers"
  fi
}

start_session() {
  local vars=(TERM=xterm-256color THOPTER_ROLE="$role") name
  for name in THOPTER_ID THOPTER_MACHINE REPOSITORY ISSUE_NUMBER APP_NAME; do
    if [[ -n ${!name:-} ]]; then vars+=("$name=${!name}"); fi
  done
  as_thopter "${vars[@]}" tmux new-session -d -s thopter -c "$workspace"
  log "tmux session thopter started"
}

mark_ready() {
  if [[ -n $hold_ready ]]; then
    while [[ -e $hold_ready ]]; do sleep 0.05; done
  fi
  date -u +%Y-%m-%dT%H:%M:%SZ >"$ready_file.tmp"
  chmod 0644 "$ready_file.tmp"
  mv -f "$ready_file.tmp" "$ready_file"
  log "ready"
}

# init stays the machine's main process: when it exits, Fly stops the machine (and restarts it on
# failure). It keeps sshd up (the hub's only way in), and on Fly's stop signal stops everything.
supervise() {
  local restarts=0 status
  while true; do
    if [[ -z $sshd_pid ]]; then
      sleep infinity &
      idle_pid=$!
      wait "$idle_pid" || true
      continue
    fi
    status=0
    wait "$sshd_pid" || status=$?
    sshd_pid=
    ((restarts < 10)) || fail "sshd exited again (exit $status) after $restarts restarts"
    restarts=$((restarts + 1))
    log "sshd exited (exit $status): starting it again"
    sleep 1
    start_sshd
  done
}

on_signal() {
  log "stopping"
  stop_all
  exit 0
}

main() {
  case $role in
    thopter | golden) ;;
    *)
      echo "init: THOPTER_ROLE must be thopter or golden, not $role" >&2
      exit 1
      ;;
  esac
  if ! id thopter >/dev/null 2>&1; then
    echo "init: the image has no user thopter" >&2
    exit 1
  fi
  trap on_signal TERM INT
  start_log
  check_data
  claim_volume
  delete_old_data
  prepare_home
  load_firewall
  start_sshd
  start_helpers
  start_session
  mark_ready
  supervise
}

main "$@"
