#!/usr/bin/env bash
# The API contract, checked from outside: Schemathesis generates requests for every operation of
# /openapi.json (50 per operation, with real ids, a merchant key and the admin token) against a
# live `hilt serve` on SQLite, and fails on any 5xx, undocumented status, or response that does
# not match its schema; then promtool checks its /metrics. Usage: .ci/schemathesis.sh path/to/hilt
set -euo pipefail
cd "$(dirname "$0")/.."
hilt="$1"
command -v st >/dev/null || pip install --quiet schemathesis

dir="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
export HILT_ST_ADMIN_TOKEN="schemathesis-admin-token"
DATABASE_URL="sqlite://$dir/hilt.db" HILT_LISTEN="127.0.0.1:$port" HILT_ADMIN_TOKEN="$HILT_ST_ADMIN_TOKEN" \
  HILT_RATE_LIMIT=1000000 HILT_AUTH_FAILURE_LIMIT=1000000 HILT_OUTBOX_DIR="$dir/outbox" \
  HILT_RECEIPT_KEY_FILE="$dir/key" HILT_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | base64)" \
  "$hilt" serve >"$dir/serve.log" 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done

# post PATH TOKEN JSON FIELD: POSTs and prints FIELD of the answer.
post() {
  curl -fsS -X POST "$base$1" -H "authorization: Bearer $2" -H 'content-type: application/json' -d "$3" \
    | python3 -c "import json,sys; print(json.load(sys.stdin)$4)"
}
export HILT_ST_API_KEY=$(post /v1/admin/merchants "$HILT_ST_ADMIN_TOKEN" '{"name":"Schemathesis"}' '["api_key"]')
export HILT_ST_PRODUCT=$(post /v1/products "$HILT_ST_API_KEY" \
  '{"name":"VIP","platform":"telegram","fallback_invite_url":"https://t.me/+vip","price":{"amount":"5","currency":"USDC"}}' '["id"]')
export HILT_ST_ENDPOINT=$(post /v1/webhook-endpoints "$HILT_ST_API_KEY" '{"url":"https://example.com/hook","events":["*"]}' '["id"]')
export HILT_ST_PAYMENT=$(post /v1/payments "$HILT_ST_API_KEY" \
  "{\"product_id\":\"$HILT_ST_PRODUCT\",\"wallet\":\"w1\",\"buyer\":{\"email\":\"buyer@example.com\"}}" '["id"]')
confirmed=$(curl -fsS -X POST "$base/v1/payments/$HILT_ST_PAYMENT/confirm" -H "authorization: Bearer $HILT_ST_ADMIN_TOKEN" \
  -H 'content-type: application/json' -d '{"tx_signature":"tx-schemathesis"}')
export HILT_ST_MEMBERSHIP=$(echo "$confirmed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["membership_id"])')
export HILT_ST_RECEIPT=$(echo "$confirmed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["receipt_id"])')
export HILT_ST_TICKET=$(post /v1/support/tickets "$HILT_ST_API_KEY" '{"subject":"Help","body":"No access"}' '["id"]')
# The confirm's delivery job, and the webhook delivery of its event once the worker has tried it.
export HILT_ST_JOB=$(curl -fsS "$base/v1/ops/queues/delivery/jobs" -H "authorization: Bearer $HILT_ST_ADMIN_TOKEN" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
for _ in $(seq 1 100); do
  HILT_ST_WEBHOOK_DELIVERY=$(curl -fsS "$base/v1/webhook-endpoints/$HILT_ST_ENDPOINT/deliveries" -H "authorization: Bearer $HILT_ST_API_KEY" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d[0]["id"] if d else "")')
  [ -n "$HILT_ST_WEBHOOK_DELIVERY" ] && break
  sleep 0.2
done
export HILT_ST_WEBHOOK_DELIVERY

st --config-file .ci/schemathesis.toml run "$base/openapi.json" --no-color

# What Prometheus would scrape after all that traffic, checked by Prometheus' own linter.
if command -v promtool >/dev/null; then
  curl -fsS "$base/metrics" -H "authorization: Bearer $HILT_ST_ADMIN_TOKEN" >"$dir/metrics.txt"
  grep -q '^hilt_http_requests_total{' "$dir/metrics.txt"
  promtool check metrics <"$dir/metrics.txt"
  echo "promtool check metrics: $(grep -c '^hilt_' "$dir/metrics.txt") series, passed"
fi
