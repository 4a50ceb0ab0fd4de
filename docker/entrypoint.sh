#!/usr/bin/env bash
# Container entrypoint: serve the chamberlain function named by CHAMBERLAIN_FUNCTION with
# gunicorn. One image runs every function; the Knative Service of each function sets the name
# (knative/base/functions/services.yaml, rendered from src/chamberlain/packaging.py).
#
#   git-ingress   the webhook app (chamberlain.ingress.webhook_app:from_env()): Git providers
#                 call it directly, it posts git.push.v1 events to K_SINK (a SinkBinding).
#   anything else a CloudEvent step (chamberlain.runtime.serve:app), which imports only what
#                 that step needs, so a scale-from-zero start stays short.
#
# Knative sets PORT. GUNICORN_THREADS matches the Service's containerConcurrency (set from the
# packaging table); one worker per container, since Knative scales by adding pods. Extra
# gunicorn flags can be passed as arguments.
set -euo pipefail

if [[ -z "${CHAMBERLAIN_FUNCTION:-}" ]]; then
  echo '{"level":"ERROR","message":"CHAMBERLAIN_FUNCTION is not set: which function should this container serve?"}' >&2
  exit 64
fi

case "${CHAMBERLAIN_FUNCTION}" in
  git-ingress) app="chamberlain.ingress.webhook_app:from_env()" ;;
  *) app="chamberlain.runtime.serve:app" ;;
esac

tmp_dir=/tmp
if [[ -d /dev/shm && -w /dev/shm ]]; then
  tmp_dir=/dev/shm # the worker heartbeat file must not sit on a slow overlay filesystem
fi

exec gunicorn \
  --bind "${HOST:-0.0.0.0}:${PORT:-8080}" \
  --worker-class gthread \
  --workers "${GUNICORN_WORKERS:-1}" \
  --threads "${GUNICORN_THREADS:-4}" \
  --graceful-timeout "${GUNICORN_GRACEFUL_TIMEOUT:-25}" \
  --worker-tmp-dir "${tmp_dir}" \
  --logger-class chamberlain.runtime.serve.GunicornLogger \
  --no-control-socket \
  "$@" \
  "${app}"
