#!/usr/bin/env bash
# Installs what the tests need and is missing, then runs every check and test:
# typecheck, lint, format, shellcheck, and the test suite against real redis-server, tmux, git,
# OpenSSH (an sshd per Fly test machine, in namespaces of its own), nftables (the thopter's
# firewall, in network namespaces the tests make) and Chromium (the dashboard, headless).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need_node
install_missing redis-server:redis-server tmux:tmux git:git pgrep:procps shellcheck:shellcheck \
  sshd:openssh-server ssh:openssh-client unshare:util-linux nft:nftables ip:iproute2 dig:dnsutils \
  chromium:chromium
install_node_modules
install_claude_binary
npm run check
shellcheck scripts/*.sh test/fixtures/*.sh thopter/*.sh .ci/run
npm test
