#!/usr/bin/env bash
# A scripted "browser" for the gateway's OAuth sign-in and consent pages (manual trials only).
#
#   GATEWAY_EMAIL=you@example.com GATEWAY_PASSWORD=... bench/clients/browser_login.sh '<authorization URL>'
#
# Opens the authorization URL with curl (cookie jar), follows the gateway's redirects to /login, posts the
# email, password and the form's hidden tx/csrf fields with Origin set to the gateway's origin, posts the
# consent form with decision=approve (GATEWAY_DECISION=deny to refuse), then GETs the final Location (the
# client's loopback redirect URI) so the waiting client receives the code. Use it as $BROWSER.
# Every request is bounded (curl -m). Writes a trace to $BROWSER_LOG (default /tmp/browser_login.log).
set -euo pipefail

url="${1:?usage: browser_login.sh AUTHORIZATION_URL}"
email="${GATEWAY_EMAIL:-you@example.com}"
password="${GATEWAY_PASSWORD:?set GATEWAY_PASSWORD}"
decision="${GATEWAY_DECISION:-approve}"
log="${BROWSER_LOG:-/tmp/browser_login.log}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
jar="$work/jar"

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >>"$log"; }
origin_of() { python3 -c 'import sys,urllib.parse as u;p=u.urlsplit(sys.argv[1]);print(f"{p.scheme}://{p.netloc}")' "$1"; }
absolute() { python3 -c 'import sys,urllib.parse as u;print(u.urljoin(sys.argv[1],sys.argv[2]))' "$1" "$2"; }
field() { python3 -c 'import re,sys;m=re.search(r"name=\"%s\" value=\"([^\"]*)\"" % sys.argv[1], open(sys.argv[2]).read());print(m.group(1) if m else "")' "$1" "$2"; }
# GET/POST without following redirects; prints the status and leaves Location in $work/location.
request() {
  local out="$1"; shift
  curl -sS -m 15 -o "$out" -D "$work/headers" -w '%{http_code}' -c "$jar" -b "$jar" "$@"
  sed -n 's/^[Ll]ocation: *//p' "$work/headers" | tr -d '\r' >"$work/location"
}

say "open $url"
gateway="$(origin_of "$url")"
status="$(request "$work/page" "$url")"
location="$(cat "$work/location")"
say "GET authorize -> $status $location"
# Follow GET redirects while they stay on the gateway (authorize -> /login or /consent).
hops=0
while [[ "$status" =~ ^30[1237]$ && "$(origin_of "$(absolute "$url" "$location")")" == "$gateway" && $hops -lt 5 ]]; do
  url="$(absolute "$url" "$location")"
  status="$(request "$work/page" "$url")"
  location="$(cat "$work/location")"
  say "GET $url -> $status $location"
  hops=$((hops + 1))
done

if [[ "$url" == */login\?* && "$status" == 200 ]]; then
  tx="$(field tx "$work/page")"; csrf="$(field csrf "$work/page")"
  status="$(request "$work/page" -X POST -H "Origin: $gateway" --data-urlencode "tx=$tx" --data-urlencode "csrf=$csrf" \
    --data-urlencode "email=$email" --data-urlencode "password=$password" "$gateway/login")"
  location="$(cat "$work/location")"
  say "POST /login -> $status $location"
  [[ "$status" == 303 ]] || { say "sign-in failed: $(head -c 600 "$work/page")"; exit 1; }
  url="$(absolute "$gateway/login" "$location")"
  status="$(request "$work/page" "$url")"
  location="$(cat "$work/location")"
  say "GET $url -> $status $location"
fi

if [[ "$url" == */consent\?* && "$status" == 200 ]]; then
  tx="$(field tx "$work/page")"; csrf="$(field csrf "$work/page")"
  status="$(request "$work/page" -X POST -H "Origin: $gateway" --data-urlencode "tx=$tx" --data-urlencode "csrf=$csrf" \
    --data-urlencode "decision=$decision" "$gateway/consent")"
  location="$(cat "$work/location")"
  say "POST /consent -> $status $location"
  [[ "$status" == 303 ]] || { say "consent failed: $(head -c 600 "$work/page")"; exit 1; }
fi

[[ -n "$location" ]] || { say "no redirect back to the client (status $status): $(head -c 600 "$work/page")"; exit 1; }
final="$(absolute "$url" "$location")"
say "deliver to client: ${final%%\?*}?…"
# The client's redirect URI (a loopback listener): plain GET, no cookies of ours.
code="$(curl -sS -m 15 --retry 5 --retry-connrefused --retry-delay 1 -o "$work/final" -w '%{http_code}' "$final" || true)"
say "GET redirect URI -> $code $(head -c 200 "$work/final")"
