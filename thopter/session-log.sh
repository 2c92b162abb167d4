#!/usr/bin/env bash
# Seed step 19: every 30 s, claude-code-log renders Claude Code's transcripts
# (~/.claude/projects/**/*.jsonl) as HTML next to them, for people who download the volume. The
# hub reads the JSONL itself over SSH and renders it in the dashboard, so nothing here listens on a
# port (the seed's log web server on 7791 is gone, like its web terminal: see thopter/README.md).
#
# Run by pm2 as the thopter user. Without claude-code-log it says so once and idles: pm2 sees a
# process that stays up, not one to restart in a loop.
set -euo pipefail

projects="${HOME:?}/.claude/projects"

say() {
  printf '%s session-log: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

if ! command -v claude-code-log >/dev/null 2>&1; then
  say "claude-code-log is not installed: no HTML transcripts on this machine"
  exec sleep infinity
fi

say "rendering $projects every 30 s"
while true; do
  if [[ -d $projects ]]; then
    # Bounded, so one run stuck on a huge transcript cannot stop every later one.
    status=0
    timeout 300 claude-code-log --all-projects >/dev/null || status=$?
    ((status == 0)) || say "claude-code-log failed (exit $status); trying again in 30 s"
  fi
  sleep 30
done
