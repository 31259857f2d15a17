#!/usr/bin/env bash
# The merchant API under load, with wrk, against `hilt api` on PostgreSQL holding 1,000,000
# memberships (and their 1,000,000 confirmed payments) of one merchant:
#   1. GET /v1/memberships/{id}, random ids, 4 connections (a closed loop: its rate is what the
#      API sustains at that concurrency) — latency percentiles and rate;
#   2. POST /v1/payments/{id}/confirm, 32 connections, each pending payment confirmed once —
#      the whole confirm transaction (membership, signed receipt, event, delivery job);
#   3. the plans of the ledger search and the lookups at that size.
# Usage: bench/api-load.sh [seconds per run, default 20]. Needs wrk, psql and a release build
# (cargo build --release -p hilt-api). The database hilt_api_bench is dropped and made anew.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
pg="postgres://postgres@127.0.0.1:5432"
db="hilt_api_bench"
seeded=1000000
pending=60000
admin="api-bench-admin-token"
port=7480
base="http://127.0.0.1:$port"
dir="$(mktemp -d)"

dropdb -h 127.0.0.1 -U postgres --if-exists "$db"
createdb -h 127.0.0.1 -U postgres "$db"
export DATABASE_URL="$pg/$db" HILT_ADMIN_TOKEN="$admin" HILT_LISTEN="127.0.0.1:$port" HILT_RATE_LIMIT=1000000 \
  HILT_RECEIPT_KEY_FILE="$dir/key" HILT_OUTBOX_DIR="$dir/outbox" HILT_LOG_LEVEL=warn
./target/release/hilt migrate >/dev/null
./target/release/hilt api >"$dir/api.log" 2>&1 &
api=$!
trap 'kill $api 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
key=$(curl -fsS -X POST "$base/v1/admin/merchants" -H "authorization: Bearer $admin" -d '{"name":"Bench"}' | json '["api_key"]')
merchant=$(curl -fsS "$base/v1/products" -H "authorization: Bearer $key" >/dev/null; psql -Atq "$DATABASE_URL" -c "SELECT id FROM merchants")
product=$(curl -fsS -X POST "$base/v1/products" -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d '{"name":"Bench","platform":"telegram","fallback_invite_url":"https://t.me/+bench","price":{"amount":"5","currency":"USDC"}}' | json '["id"]')

echo "== seeding $seeded memberships and payments, $pending pending payments"
started=$(date +%s)
psql -q "$DATABASE_URL" <<SQL
INSERT INTO payments (id, merchant_id, product_id, amount, currency, status, wallet, tx_signature, buyer_handle,
    membership_id, receipt_id, created_at, confirmed_at)
SELECT format('pay_seed_%s', lpad(n::text, 15, '0')), '$merchant', '$product', '5', 'USDC', 'confirmed', 'w' || n,
    'tx-seed-' || n, '@buyer' || n, format('mem_seed_%s', lpad(n::text, 15, '0')), NULL,
    1700000000000 + n * 1000, 1700000000000 + n * 1000
FROM generate_series(0, $seeded - 1) n;
INSERT INTO memberships (id, merchant_id, product_id, platform, buyer_key, status, wallet, telegram_user_id, handle,
    current_period_end, last_payment_id, delivery_status, delivery_attempts, delivered_at, created_at, updated_at)
SELECT format('mem_seed_%s', lpad(n::text, 15, '0')), '$merchant', '$product', 'telegram', 'wallet:w' || n, 'active',
    'w' || n, 100000000 + n, '@buyer' || n, NULL, format('pay_seed_%s', lpad(n::text, 15, '0')), 'delivered', 1,
    1700000000000 + n * 1000, 1700000000000 + n * 1000, 1700000000000 + n * 1000
FROM generate_series(0, $seeded - 1) n;
INSERT INTO payments (id, merchant_id, product_id, amount, currency, status, wallet, created_at)
SELECT format('pay_bench_%s', lpad(n::text, 15, '0')), '$merchant', '$product', '5', 'USDC', 'pending', 'cw' || n,
    1800000000000 + n
FROM generate_series(0, $pending - 1) n;
VACUUM ANALYZE;
SQL
echo "seeded in $(( $(date +%s) - started )) s"

echo "== GET /v1/memberships/{id}: wrk, 2 threads, 4 connections, ${seconds} s"
HILT_KEY="$key" HILT_SEEDED=$seeded wrk -t2 -c4 -d"${seconds}s" --latency -s bench/wrk/get_membership.lua "$base" \
  | grep -E "Latency|50%|90%|99%|Requests/sec|Non-2xx|requests in"

echo "== POST /v1/payments/{id}/confirm: wrk, 2 threads, 32 connections, ${seconds} s"
HILT_ADMIN="$admin" HILT_PENDING=$pending WRK_THREADS=2 wrk -t2 -c32 -d"${seconds}s" --latency -s bench/wrk/confirm.lua "$base" \
  | grep -E "Latency|50%|90%|99%|Requests/sec|Non-2xx|requests in"
psql -Atq "$DATABASE_URL" -c "SELECT 'confirmed by the run: ' || COUNT(*) FROM payments WHERE id LIKE 'pay_bench_%' AND status = 'confirmed'" \
  -c "SELECT 'idempotency keys saved with their responses: ' || COUNT(*) FROM idempotency_keys WHERE response_status = 200"

echo "== the ledger and lookups at this size: time, and the plan the API's own statement got"
# auto_explain logs the plan of every statement of the API's new sessions to the server log.
log="$(ls /var/log/postgresql/postgresql-*-main.log | head -n1)"
kill $api; wait $api 2>/dev/null || true
psql -q "$DATABASE_URL" -c "ALTER DATABASE $db SET session_preload_libraries = 'auto_explain'" \
  -c "ALTER DATABASE $db SET auto_explain.log_min_duration = 0" -c "ALTER DATABASE $db SET auto_explain.log_analyze = on"
./target/release/hilt api >>"$dir/api.log" 2>&1 &
api=$!
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done
for query in "?q=buyer12345" "/lookup?wallet=w777" "/lookup?identity=@buyer777" "/lookup?identity=100000777" \
  "/lookup?tx_signature=tx-seed-777"; do
  from=$(wc -l <"$log")
  curl -fsS -o /dev/null -w "GET /v1/memberships$query: %{http_code} in %{time_total} s\n" \
    "$base/v1/memberships$query" -H "authorization: Bearer $key"
  sleep 0.5
  # The plans of the rows statement and its count (the merchant's memberships table only).
  tail -n +"$((from + 1))" "$log" | grep -E "Scan|Execution Time|Limit|Aggregate|Sort" | grep -vE "merchants|pg_" | sed 's/^.*LOG: *//' | head -20
done
psql -q "$DATABASE_URL" -c "ALTER DATABASE $db RESET ALL"
