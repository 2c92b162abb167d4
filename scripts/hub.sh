#!/usr/bin/env bash
# Installs what the hub needs and is missing (Claude Code too), then runs it on the embedded default:
# the local provider, and a redis-server of its own under DATA_DIR (./data).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need_node
install_missing redis-server:redis-server tmux:tmux git:git pgrep:procps
install_node_modules
install_claude_binary
install_claude
exec npm start
