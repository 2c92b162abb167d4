#!/usr/bin/env bash
# The thopter's egress firewall: one nftables `inet` table (IPv4 and IPv6) that lets the machine
# reach only what an agent needs, and fails closed.
#
# Usage, as root. nft needs CAP_NET_ADMIN; the agent's user `thopter` has no capabilities, so it
# can neither load, change nor remove these rules.
#
#   firewall.sh start         resolve every allowed name, then load the whole table in one nft
#                             transaction (an existing table is replaced in that same transaction).
#                             Init runs it before the agent and must not go on unless it exits 0.
#   firewall.sh refresh       resolve again and update the address sets in one transaction; the
#                             table, its chains and its counters are never flushed or recreated.
#   firewall.sh refresh-loop  `refresh` every FIREWALL_REFRESH_SECONDS, forever (pm2 runs it);
#                             with the firewall skipped it only idles. Stops on TERM or INT.
#   firewall.sh status        the counters and the size of each set; exit 1 if not loaded.
#
# There is no `stop`: removing the table opens all egress, and nothing in a thopter should do
# that. An operator who means it runs `nft delete table inet thopter_firewall` by hand.
#
# Exit codes: 0 done, or the firewall is skipped on purpose; 1 the ruleset did not load, the
# table is missing, or a refresh did not apply (the sets are then unchanged); 2 bad usage or bad
# configuration (nothing was changed).
#
# Environment. Every outside input can be pointed elsewhere, which is how the tests drive it.
#
#   DANGEROUSLY_SKIP_FIREWALL        I_UNDERSTAND: load nothing, say so loudly, exit 0. Any other
#                                    non-empty value is refused (exit 2).
#   ALLOWED_DOMAINS                  more names to allow, separated by commas and/or spaces.
#   HUB_STATUS_URL                   the hub's status endpoint: its host (an address, or a name
#                                    that is resolved) and port are the one private destination
#                                    allowed.
#   FIREWALL_DOMAINS                 the base list of names, replacing DEFAULT_DOMAINS below
#                                    (set and empty: none).
#   FIREWALL_RESOLV_CONF             lists the resolvers (default /etc/resolv.conf). DNS is allowed
#                                    to those only, and every name is resolved through them.
#   GITHUB_META_FILE                 read GitHub's ranges from this file instead of fetching them.
#   GITHUB_META_URL                  where to fetch them (default https://api.github.com/meta).
#   GITHUB_META_FALLBACK             what `start` uses when neither gives any (default
#                                    firewall/github-meta.json beside this script).
#   GITHUB_META_REFRESH_SECONDS      how often `refresh` fetches them again (default 21600: the
#                                    unauthenticated API allows 60 calls an hour per address).
#   FIREWALL_INBOUND_TCP_PORTS       TCP ports reachable from outside (default 22: the hub's SSH).
#   FIREWALL_REFRESH_SECONDS         refresh-loop interval (default 300).
#   FIREWALL_ADDRESS_TIMEOUT_SECONDS how long a resolved address stays allowed after the last
#                                    answer that named it (default 3600).
#   FIREWALL_LOG                     also append the log lines here (default /thopter/log when it
#                                    exists); they always go to stderr.
#   FIREWALL_STATE                   prefix of the lock and stamp files (default
#                                    /run/thopter-firewall).
#
# Needs nft (nftables), dig (dnsutils), curl, jq, flock (util-linux) and GNU date.
#
# What it does not stop: DNS queries to the allowed resolver can carry data out (it forwards any
# name); an allowed address is allowed on every port; an address shared by many sites (npm, PyPI
# and GitHub's objects are behind CDNs) lets the agent reach the other sites on it too.
set -euo pipefail

readonly TABLE=thopter_firewall
readonly SKIP_VALUE=I_UNDERSTAND
# Anthropic: the API, the console (where a subscription login is renewed) and Statsig, as Claude
# Code uses them. Its other telemetry (sentry.io, statsig.com) is left out: the agent works without
# it, and sentry.io takes events from anyone, which is the kind of channel this firewall is there
# to close. ALLOWED_DOMAINS can add it.
readonly DEFAULT_DOMAINS="
  github.com api.github.com codeload.github.com uploads.github.com
  objects.githubusercontent.com raw.githubusercontent.com github-releases.githubusercontent.com
  release-assets.githubusercontent.com github-cloud.githubusercontent.com
  ghcr.io pkg-containers.githubusercontent.com
  registry.npmjs.org
  pypi.org files.pythonhosted.org
  api.anthropic.com console.anthropic.com statsig.anthropic.com
  deb.debian.org security.debian.org
"
# Not the public internet: the private network (Fly's 6PN is fdaa::/16, inside fc00::/7), CGNAT,
# link-local (where cloud metadata services live), loopback, multicast and reserved space.
readonly PRIVATE_V4="0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4, 240.0.0.0/4"
readonly PRIVATE_V6="::/128, ::1/128, ::ffff:0:0/96, fc00::/7, fe80::/10, ff00::/8"
# Kernel log lines of refused packets start with this; the limit keeps a flood out of the log.
readonly LOG_PREFIX="THOPTER-DROP: "
readonly LOG_LIMIT="limit rate 10/minute burst 5 packets"

script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
resolv_conf=${FIREWALL_RESOLV_CONF:-/etc/resolv.conf}
meta_url=${GITHUB_META_URL:-https://api.github.com/meta}
meta_fallback=${GITHUB_META_FALLBACK:-$(dirname "$script")/firewall/github-meta.json}
meta_refresh_seconds=${GITHUB_META_REFRESH_SECONDS:-21600}
refresh_seconds=${FIREWALL_REFRESH_SECONDS:-300}
address_timeout=${FIREWALL_ADDRESS_TIMEOUT_SECONDS:-3600}
state=${FIREWALL_STATE:-/run/thopter-firewall}
log_file=${FIREWALL_LOG:-}
if [[ -z $log_file && -e /thopter/log ]]; then
  log_file=/thopter/log
fi

# --- Logging ---------------------------------------------------------------------------------------

log() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) firewall: $*"
  printf '%s\n' "$line" >&2
  if [[ -n $log_file ]]; then
    printf '%s\n' "$line" >>"$log_file" 2>/dev/null || true
  fi
}

die() {
  local code=$1
  shift
  log "error: $*"
  exit "$code"
}

# --- Configuration ---------------------------------------------------------------------------------

# Returns 0 when the firewall is wanted, 1 when it is skipped on purpose; exits 2 on a bad value.
firewall_wanted() {
  local value=${DANGEROUSLY_SKIP_FIREWALL:-}
  if [[ -z $value ]]; then
    return 0
  fi
  if [[ $value != "$SKIP_VALUE" ]]; then
    die 2 "DANGEROUSLY_SKIP_FIREWALL has an unknown value; the only accepted value is $SKIP_VALUE (unset it to keep the firewall)"
  fi
  printf '%s\n' \
    "WARNING: DANGEROUSLY_SKIP_FIREWALL=$SKIP_VALUE: no egress firewall is loaded." \
    "WARNING: DANGEROUSLY_SKIP_FIREWALL: this thopter can reach any address, the private network included." >&2
  log "WARNING: DANGEROUSLY_SKIP_FIREWALL=$SKIP_VALUE: the firewall is OFF and egress is unrestricted"
  return 1
}

# Splits a list separated by commas and/or whitespace into one item per line, without globbing.
items() {
  tr ', \t' '\n' <<<"$1" | grep -v '^$' || true
}

check_number() {
  local name=$1 value=$2 min=$3 max=$4
  if ! [[ $value =~ ^[0-9]{1,9}$ ]] || ((10#$value < min || 10#$value > max)); then
    die 2 "$name must be a whole number from $min to $max, not '$value'"
  fi
}

# Checks the numbers and fills inbound_ports.
check_config() {
  check_number FIREWALL_REFRESH_SECONDS "$refresh_seconds" 1 999999999
  check_number FIREWALL_ADDRESS_TIMEOUT_SECONDS "$address_timeout" 1 999999999
  check_number GITHUB_META_REFRESH_SECONDS "$meta_refresh_seconds" 0 999999999
  mapfile -t inbound_ports < <(items "${FIREWALL_INBOUND_TCP_PORTS-22}")
  local port
  for port in "${inbound_ports[@]}"; do
    check_number FIREWALL_INBOUND_TCP_PORTS "$port" 1 65535
  done
  local tool
  for tool in nft dig curl jq flock; do
    command -v "$tool" >/dev/null || die 1 "$tool is not installed; the image needs it for the firewall"
  done
}

is_ipv4() { [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; }
is_ipv6() { [[ $1 =~ ^[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*$ ]]; }
is_name() {
  [[ $1 =~ ^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$ ]] &&
    ! is_ipv4 "$1"
}

# The names to allow, one per line: the base list and ALLOWED_DOMAINS.
domain_names() {
  local name
  items "${FIREWALL_DOMAINS-$DEFAULT_DOMAINS} ${ALLOWED_DOMAINS:-}" | while read -r name; do
    if is_name "$name"; then
      printf '%s\n' "${name%.}"
    else
      log "warning: '$name' is not a domain name (wildcards, URLs and addresses are not); skipped"
    fi
  done | sort -u
}

# Fills resolvers from the "nameserver" lines. An IPv6 zone (%eth0) is kept for dig; the sets
# get the address without it.
read_resolvers() {
  resolvers=()
  if [[ ! -r $resolv_conf ]]; then
    log "warning: cannot read $resolv_conf: no DNS is allowed and nothing resolves"
    return 0
  fi
  local keyword server _rest
  while read -r keyword server _rest || [[ -n $keyword ]]; do
    if [[ $keyword == nameserver ]] && { is_ipv4 "$server" || is_ipv6 "${server%%\%*}"; }; then
      resolvers+=("$server")
    fi
  done <"$resolv_conf"
  if ((${#resolvers[@]} == 0)); then
    log "warning: $resolv_conf lists no nameserver: no DNS is allowed and nothing resolves"
  fi
  resolvers_v4=() resolvers_v6=()
  for server in "${resolvers[@]}"; do
    server=${server%%\%*}
    if is_ipv4 "$server"; then resolvers_v4+=("$server"); else resolvers_v6+=("$server"); fi
  done
}

# Sets hub_host and hub_port from HUB_STATUS_URL; hub_host stays empty without one.
parse_hub_url() {
  hub_host='' hub_port=''
  local url=${HUB_STATUS_URL:-}
  [[ -n $url ]] || return 0
  local re='^(https?)://([^/@]*@)?(\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(:([0-9]{1,5}))?([/?#].*)?$'
  if ! [[ $url =~ $re ]]; then
    die 2 "HUB_STATUS_URL is not an http(s) URL with a host: '$url'"
  fi
  hub_host=${BASH_REMATCH[4]:-${BASH_REMATCH[5]}}
  hub_port=${BASH_REMATCH[7]}
  if [[ -z $hub_port ]]; then
    if [[ ${BASH_REMATCH[1]} == https ]]; then hub_port=443; else hub_port=80; fi
  fi
  check_number "the port of HUB_STATUS_URL" "$hub_port" 1 65535
  hub_port=$((10#$hub_port))
}

# --- Resolution ------------------------------------------------------------------------------------

# Keeps the resolvers that answer at all, so that a dead one costs one timeout, not one per name.
probe_resolvers() {
  live_resolvers=()
  local server
  for server in "${resolvers[@]}"; do
    if dig +time=2 +tries=2 "@$server" . NS >/dev/null 2>&1; then
      live_resolvers+=("$server")
    else
      log "warning: resolver $server does not answer"
    fi
  done
}

# Prints the addresses of TYPE (A or AAAA) for NAME, from the first resolver that has any.
lookup() {
  local name=$1 type=$2 server answer
  for server in "${live_resolvers[@]}"; do
    if answer=$(dig +noall +answer +time=2 +tries=2 "@$server" "$name" "$type" 2>/dev/null) &&
      [[ -n $answer ]]; then
      awk -v type="$type" '$4 == type { print $5 }' <<<"$answer" | while read -r address; do
        if { [[ $type == A ]] && is_ipv4 "$address"; } || { [[ $type == AAAA ]] && is_ipv6 "$address"; }; then
          printf '%s\n' "$address"
        fi
      done
      return 0
    fi
  done
}

# Fills allowed_v4 and allowed_v6 (sorted, unique) from every name, and unresolved. With
# "quiet", only the names that did not resolve are logged.
resolve_domains() {
  local mode=${1:-} name
  local -a v4 v6 all_v4=() all_v6=()
  allowed_v4=() allowed_v6=() unresolved=()
  while read -r name; do
    mapfile -t v4 < <(lookup "$name" A)
    mapfile -t v6 < <(lookup "$name" AAAA)
    if ((${#v4[@]} + ${#v6[@]} == 0)); then
      unresolved+=("$name")
      log "warning: $name did not resolve; it stays closed until a refresh resolves it"
      continue
    fi
    all_v4+=("${v4[@]}")
    all_v6+=("${v6[@]}")
    if [[ $mode != quiet ]]; then
      log "allow $name: ${v4[*]}${v4[*]:+ }${v6[*]}"
    fi
  done < <(domain_names)
  if ((${#all_v4[@]})); then mapfile -t allowed_v4 < <(printf '%s\n' "${all_v4[@]}" | sort -u); fi
  if ((${#all_v6[@]})); then mapfile -t allowed_v6 < <(printf '%s\n' "${all_v6[@]}" | sort -u); fi
}

# Fills hub_v4 and hub_v6 with "address . port" elements for the hub's status port, and
# hub_addresses with the addresses.
resolve_hub() {
  hub_v4=() hub_v6=() hub_addresses=()
  [[ -n $hub_host ]] || return 0
  local -a v4=() v6=()
  if is_ipv4 "$hub_host"; then
    v4=("$hub_host")
  elif is_ipv6 "$hub_host"; then
    v6=("$hub_host")
  else
    mapfile -t v4 < <(lookup "$hub_host" A)
    mapfile -t v6 < <(lookup "$hub_host" AAAA)
  fi
  hub_addresses=("${v4[@]}" "${v6[@]}")
  if ((${#hub_addresses[@]} == 0)); then
    log "warning: the hub's host $hub_host did not resolve; its status port stays closed until a refresh resolves it"
  fi
  local address
  for address in "${v4[@]}"; do hub_v4+=("$address . $hub_port"); done
  for address in "${v6[@]}"; do hub_v6+=("$address . $hub_port"); done
}

meta_ranges() {
  jq -r '[.api, .web, .git, .packages] | map(. // []) | add | unique | .[]' 2>/dev/null || true
}

# Fills github_v4 and github_v6 with GitHub's api, web, git and packages ranges, from
# GITHUB_META_FILE, else GITHUB_META_URL, else (with "fallback") the list baked into the image.
# Returns 1 when there are none. A successful fetch is stamped, for github_due.
github_ranges() {
  local use_fallback=${1:-} source
  local -a ranges=()
  if [[ -n ${GITHUB_META_FILE:-} ]]; then
    source=$GITHUB_META_FILE
    mapfile -t ranges < <(meta_ranges <"$GITHUB_META_FILE")
  else
    source=$meta_url
    mapfile -t ranges < <(curl -fsS --max-time 15 --retry 2 --retry-delay 1 "$meta_url" 2>/dev/null | meta_ranges)
  fi
  if ((${#ranges[@]} == 0)) && [[ $use_fallback == fallback ]]; then
    log "warning: no GitHub ranges from $source; using the baked list $meta_fallback"
    source=$meta_fallback
    mapfile -t ranges < <(meta_ranges <"$meta_fallback")
  fi
  github_v4=() github_v6=()
  local range
  for range in "${ranges[@]}"; do
    if [[ $range == */* ]] && is_ipv4 "${range%/*}" && [[ ${range#*/} =~ ^[0-9]{1,2}$ ]]; then
      github_v4+=("$range")
    elif [[ $range == */* ]] && is_ipv6 "${range%/*}" && [[ ${range#*/} =~ ^[0-9]{1,3}$ ]]; then
      github_v6+=("$range")
    fi
  done
  if ((${#github_v4[@]} + ${#github_v6[@]} == 0)); then
    log "warning: no GitHub ranges from $source"
    return 1
  fi
  if [[ $source == "$meta_url" ]]; then
    touch "$state.github-meta" 2>/dev/null || true
  fi
  log "github ranges: ${#github_v4[@]} IPv4 and ${#github_v6[@]} IPv6 from $source"
}

# Whether `refresh` should read GitHub's ranges again: a file always, the API only now and then.
github_due() {
  [[ -n ${GITHUB_META_FILE:-} ]] && return 0
  local stamp="$state.github-meta" last
  last=$(stat -c %Y "$stamp" 2>/dev/null) || return 0
  (($(date +%s) - last >= meta_refresh_seconds))
}

# --- The ruleset -----------------------------------------------------------------------------------

# "a, b, c" from the arguments, each followed by SUFFIX (such as " timeout 3600s").
join_elements() {
  local suffix=$1 out='' item
  shift
  for item in "$@"; do
    out+="${out:+, }$item$suffix"
  done
  printf '%s' "$out"
}

# "elements = { ... };" for a set definition, or nothing when there are none.
elements() {
  local suffix=$1
  shift
  if (($#)); then
    printf 'elements = { %s };' "$(join_elements "$suffix" "$@")"
  fi
}

# The whole table. The order of the output chain is the policy:
#   1. loopback, and packets of connections already accepted (either way), pass;
#   2. IPv6 neighbour discovery passes: IPv6 does not work without it, and a hop limit of 255
#      (1 for MLD) means those packets cannot have left or leave the link;
#   3. DNS to the configured resolvers and the hub's status port pass: on Fly both are on the
#      private network (fdaa::3 and the hub's 6PN address), so they come before...
#   4. ...the private network, refused even when an allowed name resolves into it (by mistake, or
#      by DNS rebinding): other thopters, golden claudes, Redis and metadata services stay out
#      of reach;
#   5. GitHub's ranges and the resolved addresses pass;
#   6. everything else is counted, logged (rate-limited) and refused.
# Refused connections are rejected (a TCP reset, else an ICMP "administratively prohibited"), so
# the agent's tools fail at once instead of hanging for minutes on a dropped SYN; a reset for TCP
# because the kernel rate-limits the ICMPv6 errors it sends. The chain policies are drop all the
# same, for whatever a rule might miss. A drop in any table is final: no other table's accept
# gets a packet past this one.
ruleset() {
  local timeout=" timeout ${address_timeout}s"
  cat <<EOF
table inet $TABLE {
  counter egress_refused { comment "new connections out to a destination not allowed"; }
  counter private_refused { comment "new connections out to the private network but the hub's status port"; }
  counter ingress_refused { comment "new connections in but to the inbound TCP ports"; }
  counter forward_dropped { comment "packets routed through this machine (containers)"; }

  set private_v4 { type ipv4_addr; flags interval; elements = { $PRIVATE_V4 }; }
  set private_v6 { type ipv6_addr; flags interval; elements = { $PRIVATE_V6 }; }
  set resolvers_v4 { type ipv4_addr; $(elements "" "${resolvers_v4[@]}") }
  set resolvers_v6 { type ipv6_addr; $(elements "" "${resolvers_v6[@]}") }
  set hub_v4 { type ipv4_addr . inet_service; flags timeout; $(elements "$timeout" "${hub_v4[@]}") }
  set hub_v6 { type ipv6_addr . inet_service; flags timeout; $(elements "$timeout" "${hub_v6[@]}") }
  set github_v4 { type ipv4_addr; flags interval; auto-merge; $(elements "" "${github_v4[@]}") }
  set github_v6 { type ipv6_addr; flags interval; auto-merge; $(elements "" "${github_v6[@]}") }
  set allowed_v4 { type ipv4_addr; flags timeout; $(elements "$timeout" "${allowed_v4[@]}") }
  set allowed_v6 { type ipv6_addr; flags timeout; $(elements "$timeout" "${allowed_v6[@]}") }
  set inbound_tcp { type inet_service; $(elements "" "${inbound_ports[@]}") }

  chain output {
    type filter hook output priority filter; policy drop;
    oif "lo" accept
    ct state established,related accept
    ct state invalid drop
    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
    icmpv6 type { mld-listener-report, mld2-listener-report } ip6 hoplimit 1 accept
    meta l4proto { tcp, udp } th dport 53 ip daddr @resolvers_v4 accept
    meta l4proto { tcp, udp } th dport 53 ip6 daddr @resolvers_v6 accept
    ip daddr . tcp dport @hub_v4 accept
    ip6 daddr . tcp dport @hub_v6 accept
    ip daddr @private_v4 goto refuse_private
    ip6 daddr @private_v6 goto refuse_private
    ip daddr @github_v4 accept
    ip6 daddr @github_v6 accept
    ip daddr @allowed_v4 accept
    ip6 daddr @allowed_v6 accept
    counter name "egress_refused" $LOG_LIMIT log prefix "${LOG_PREFIX}egress "
    goto refuse
  }

  chain refuse_private {
    counter name "private_refused" $LOG_LIMIT log prefix "${LOG_PREFIX}private "
    goto refuse
  }

  chain refuse {
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }

  # Inbound matters for egress too: replies to an accepted inbound connection leave as
  # "established", so a server the agent started would hand data to anyone on the private
  # network. Only the hub's SSH (key-only, user thopter) takes connections from outside.
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
    ct state invalid drop
    icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
    icmpv6 type mld-listener-query ip6 hoplimit 1 accept
    tcp dport @inbound_tcp accept
    counter name "ingress_refused" $LOG_LIMIT log prefix "${LOG_PREFIX}ingress "
    goto refuse
  }

  # Containers the agent might run send through forward, not output: nothing is routed.
  chain forward {
    type filter hook forward priority filter; policy drop;
    counter name "forward_dropped" $LOG_LIMIT log prefix "${LOG_PREFIX}forward "
    drop
  }
}
EOF
}

# Loopback and established flows out; the hub's SSH in. Loaded when the full ruleset does not
# load, so that a failed start leaves the machine closed rather than open.
lockdown_ruleset() {
  local inbound=''
  if ((${#inbound_ports[@]})); then
    inbound="tcp dport { $(join_elements "" "${inbound_ports[@]}") } accept"
  fi
  cat <<EOF
table inet $TABLE {
  chain output {
    type filter hook output priority filter; policy drop;
    oif "lo" accept
    ct state established,related accept
    icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
    $LOG_LIMIT log prefix "${LOG_PREFIX}lockdown "
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
    icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
    $inbound
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
  }
}
EOF
}

# Prefixes the table on stdin with what makes loading it replace the current one atomically:
# creating the table first makes the delete valid where it does not exist yet, and nft -f
# applies the whole file as one transaction.
replacing() {
  printf 'table inet %s\ndelete table inet %s\n' "$TABLE" "$TABLE"
  cat
}

# Adds ELEMENTS to the timeout SET with a fresh timeout. `add` leaves the timeout of an element
# already there as it is, so each one is added (a no-op if present), deleted and added again, in
# the caller's transaction: no packet ever sees it missing.
renew_elements() {
  local set=$1
  shift
  (($#)) || return 0
  local list
  list=$(join_elements "" "$@")
  printf 'add element inet %s %s { %s }\n' "$TABLE" "$set" "$list"
  printf 'delete element inet %s %s { %s }\n' "$TABLE" "$set" "$list"
  printf 'add element inet %s %s { %s }\n' "$TABLE" "$set" "$(join_elements " timeout ${address_timeout}s" "$@")"
}

# Replaces the elements of SET (flush, then add, in the caller's transaction).
replace_elements() {
  local set=$1
  shift
  printf 'flush set inet %s %s\n' "$TABLE" "$set"
  if (($#)); then
    printf 'add element inet %s %s { %s }\n' "$TABLE" "$set" "$(join_elements "" "$@")"
  fi
}

# --- Commands --------------------------------------------------------------------------------------

# Serializes start and refresh (the refresh-loop and one run by hand, say) until the process ends.
take_lock() {
  mkdir -p "$(dirname "$state")"
  exec 9>>"$state.lock" || die 1 "cannot open the lock file $state.lock"
  flock -w 120 9 || die 1 "another firewall.sh has held $state.lock for two minutes"
}

# A temporary file removed when the script exits.
temp_file() {
  temp=$(mktemp)
  # shellcheck disable=SC2064 # expanded now on purpose: the path is what has to go.
  trap "rm -f '$temp'" EXIT
}

start() {
  firewall_wanted || exit 0
  log "start: loading the egress firewall (table inet $TABLE)"
  check_config
  parse_hub_url
  read_resolvers
  log "resolvers: ${resolvers[*]:-none} (from $resolv_conf)"
  take_lock
  probe_resolvers
  resolve_hub
  if [[ -n $hub_host ]]; then
    log "hub status port: $hub_host port $hub_port, at ${hub_addresses[*]:-no address yet} (from HUB_STATUS_URL)"
  else
    log "no HUB_STATUS_URL: no private destination is allowed (a golden claude has no observer)"
  fi
  github_ranges fallback || true
  resolve_domains
  log "loading: ${#allowed_v4[@]} IPv4 and ${#allowed_v6[@]} IPv6 addresses, inbound TCP ports ${inbound_ports[*]:-none}"

  local output
  temp_file
  ruleset | replacing >"$temp"
  if ! output=$(nft -f "$temp" 2>&1); then
    log "error: the ruleset did not load: ${output//$'\n'/ | }"
    if output=$(lockdown_ruleset | replacing | nft -f - 2>&1); then
      log "error: loaded the lockdown ruleset instead: nothing goes out but loopback and established flows"
    else
      log "error: the lockdown ruleset did not load either: ${output//$'\n'/ | }"
    fi
    die 1 "start failed; the agent must not run"
  fi
  local chain
  chain=$(nft list chain inet "$TABLE" output 2>/dev/null) || chain=''
  if [[ $chain != *"hook output priority filter; policy drop;"* ]]; then
    die 1 "the table loaded without its drop-policy output chain; the agent must not run"
  fi
  log "start: loaded; egress goes to the allowed names, GitHub's ranges, the resolvers and the hub's status port only"
}

refresh() {
  firewall_wanted || exit 0
  check_config
  parse_hub_url
  if ! nft list table inet "$TABLE" >/dev/null 2>&1; then
    die 1 "refresh: table inet $TABLE is not loaded; run 'firewall.sh start'"
  fi
  read_resolvers
  take_lock
  probe_resolvers
  resolve_hub
  resolve_domains quiet
  local github=''
  if github_due && github_ranges; then
    github=yes
  fi

  local output
  temp_file
  {
    replace_elements resolvers_v4 "${resolvers_v4[@]}"
    replace_elements resolvers_v6 "${resolvers_v6[@]}"
    renew_elements hub_v4 "${hub_v4[@]}"
    renew_elements hub_v6 "${hub_v6[@]}"
    renew_elements allowed_v4 "${allowed_v4[@]}"
    renew_elements allowed_v6 "${allowed_v6[@]}"
    if [[ -n $github ]]; then
      replace_elements github_v4 "${github_v4[@]}"
      replace_elements github_v6 "${github_v6[@]}"
    fi
  } >"$temp"
  if ! output=$(nft -f "$temp" 2>&1); then
    die 1 "refresh: the update did not apply, the sets are unchanged: ${output//$'\n'/ | }"
  fi
  log "refresh: ${#allowed_v4[@]} IPv4 and ${#allowed_v6[@]} IPv6 addresses allowed for ${address_timeout}s more${unresolved[*]:+; did not resolve: ${unresolved[*]}}"
}

refresh_loop() {
  if ! firewall_wanted; then
    # Nothing to refresh. Idle rather than exit, or pm2 would restart this again and again.
    exec sleep infinity
  fi
  check_config
  log "refresh-loop: every ${refresh_seconds}s"
  local sleeper=''
  trap 'log "refresh-loop: stopped"; [[ -z $sleeper ]] || kill "$sleeper" 2>/dev/null; exit 0' TERM INT
  while true; do
    # Its own process: a refresh that fails is logged, and the loop goes on.
    bash "$script" refresh || log "refresh-loop: that refresh failed; the next one is in ${refresh_seconds}s"
    # In the background, so that TERM is handled at once rather than after the sleep.
    sleep "$refresh_seconds" &
    sleeper=$!
    wait "$sleeper" || true
    sleeper=''
  done
}

status() {
  if ! nft list table inet "$TABLE" >/dev/null 2>&1; then
    echo "firewall: table inet $TABLE is not loaded"
    return 1
  fi
  echo "firewall: table inet $TABLE is loaded"
  nft -j list counters table inet "$TABLE" |
    jq -r '.nftables[] | select(.counter) | .counter | "\(.name): \(.packets) packets, \(.bytes) bytes"'
  local set
  for set in resolvers_v4 resolvers_v6 hub_v4 hub_v6 github_v4 github_v6 allowed_v4 allowed_v6 inbound_tcp; do
    printf '%s: %s elements\n' "$set" \
      "$(nft -j list set inet "$TABLE" "$set" | jq '[.nftables[] | select(.set) | .set.elem // [] | length] | add')"
  done
}

usage() {
  sed -n '2,/^set -euo pipefail/p' "$script" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

case ${1:-} in
  start) start ;;
  refresh) refresh ;;
  refresh-loop) refresh_loop ;;
  status) status ;;
  *) usage ;;
esac
