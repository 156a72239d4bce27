#!/usr/bin/env bash
# Schemathesis (from PyPI) against the REST control plane of a real VM: it generates requests
# from api/openapi.json and checks that none gets a 5xx and every response matches its schema.
#
#   tests/schemathesis/run.sh [DRVISOR_BINARY]
#
# The VM is the embedded guest's `spin` scenario held `--paused` for the whole run, so every
# endpoint answers from a live VM that random requests cannot end: POST /vm/stop and
# PUT /vm/state (which would end or run it) and GET /events (a stream that lasts until the VM
# stops) are left out; the end-to-end tests cover them. Served over loopback TCP with a token,
# so the token check is exercised on every request too.
set -euo pipefail
cd "$(dirname "$0")/../.."
drvisor=${1:-target/debug/drvisor}
[ -x "$drvisor" ] || cargo build -p drvisor --bin drvisor
venv=target/schemathesis-venv
# A venv made in another checkout (a copied target/) has scripts that name its old path.
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
# Private, as drvisor asks of a token file (it refuses one that others may read).
(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$drvisor" run --scenario spin --paused --api-sock "$work/api.sock" \
  --api-tcp "127.0.0.1:$port" --api-token-file "$work/token" > "$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$work/api.sock" ] && break; sleep 0.1; done
[ -S "$work/api.sock" ] || { cat "$work/run.log"; echo "drvisor did not start" >&2; exit 1; }
status=0
"$venv/bin/schemathesis" run api/openapi.json --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $(cat "$work/token")" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path /vm/stop --exclude-path /vm/state --exclude-path /events \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" --generation-deterministic --workers 1 \
  || status=$?
# The VM must have lived through it: a request that stopped it would be a finding too.
if ! kill -0 "$pid" 2>/dev/null; then
  echo "drvisor exited during the run:" >&2
  cat "$work/run.log" >&2
  status=1
fi
exit "$status"
