# Shared by scripts/hub.sh and scripts/test.sh: install what is missing, and nothing else.
# shellcheck shell=bash

# Node.js 20 or newer must already be there: Debian's own nodejs package is older.
need_node() {
  if ! command -v node >/dev/null 2>&1; then
    echo "Node.js 20 or newer is required: install it from https://nodejs.org (or NodeSource's Debian packages), then run this again." >&2
    exit 1
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 20 ]; then
    echo "Node.js $(node --version) is too old: Thopter Swarm needs Node.js 20 or newer." >&2
    exit 1
  fi
}

# install_missing COMMAND:PACKAGE ... — apt-get installs the packages whose command is missing.
install_missing() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "Please install: ${missing[*]} (this script knows only apt-get)." >&2
    exit 1
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "Installing ${missing[*]} with apt-get..." >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Installs node_modules from package-lock.json when it is missing or older than the lockfile.
# `npm ci`, never `npm install`: the lockfile is complete (every platform build of optional native
# packages is listed), so every machine gets exactly the tree that was tested.
install_node_modules() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
}

# npm here does not run install scripts, and Claude Code's postinstall is what copies its native
# binary over the bin/claude.exe placeholder: run it when the placeholder is still in place.
install_claude_binary() {
  local pkg=node_modules/@anthropic-ai/claude-code
  [ -f "$pkg/install.cjs" ] || return 0
  if ! node_modules/.bin/claude --version >/dev/null 2>&1; then
    node "$pkg/install.cjs"
  fi
}

# Claude Code is the agent every thopter runs. When `claude` is missing, the version the tests ran
# against (package.json) is installed globally, so the operator has it too, to log in a golden claude.
install_claude() {
  command -v claude >/dev/null 2>&1 && return 0
  local version sudo=()
  version=$(node -p 'require("./package.json").devDependencies["@anthropic-ai/claude-code"]')
  [ "$(id -u)" -eq 0 ] || [ -w "$(npm prefix -g)" ] || sudo=(sudo)
  echo "Installing Claude Code ${version} with npm..." >&2
  "${sudo[@]}" npm install -g --no-audit --no-fund "@anthropic-ai/claude-code@${version}"
  if ! claude --version >/dev/null 2>&1; then
    "${sudo[@]}" node "$(npm root -g)/@anthropic-ai/claude-code/install.cjs"
  fi
}
