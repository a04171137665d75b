#!/usr/bin/env bash
# Instructions and allocations per request added by each ready-made filter (gateway-filters),
# attached by a TrafficPolicy to every route of the peer benchmark's table, measured with
# callgrind.py (deterministic; fine on a busy machine). Each filter is compared with a baseline
# run of the same request shape without the policy.
#
#   cargo build --release -p examples --bin file-gateway -p gateway-benches --bin loadgen
#   bash benches/profile/filters.sh [routes] [seconds]        # needs nginx; redis-server for global
set -euo pipefail
cd "$(dirname "$0")/../.."
routes=${1:-10}
seconds=${2:-10}
here=benches/profile
# HS256 demo token of examples/policy.yaml (sub alice, iss policy-example).
TOKEN=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJhbGljZSIsImlzcyI6InBvbGljeS1leGFtcGxlIn0.Mb9Wo2W4AMGar5M8m0_8d_HXRmhm60PjymMcl7iJ72U
BODY='{"model": "m1", "messages": [{"role": "user", "content": "hello there, how are you?"}]}'
run() { # name, extra-config or "", loadgen args...
  local name=$1 extra=$2; shift 2
  local args=()
  for a in "$@"; do args+=("--loadgen-arg=$a"); done
  local cfg=()
  [ -n "$extra" ] && cfg=(--extra-config "$here/filters/$extra")
  printf '%s\t' "$name"
  python3 $here/callgrind.py --gateway target/release/file-gateway --loadgen target/release/loadgen \
    --routes "$routes" --seconds "$seconds" --connections 10 "${cfg[@]}" "${args[@]}"
}
run baseline "" 
run jwt jwt.yaml "--header=authorization: Bearer $TOKEN"
run baseline-auth-header "" "--header=authorization: Bearer $TOKEN"
run local-ratelimit ratelimit.yaml
if command -v redis-server >/dev/null && redis-cli ping >/dev/null 2>&1; then
  run global-ratelimit global-ratelimit.yaml
fi
run baseline-post "" --method=POST "--header=content-type: application/json" "--body=$BODY"
run transformation transformation.yaml --method=POST "--header=content-type: application/json" "--body=$BODY"
run baseline-100k "" --tail=text100k "--header=accept-encoding: gzip"
run compression-100k compression.yaml --tail=text100k "--header=accept-encoding: gzip"
