#!/usr/bin/env bash
# Runs Prometheus and `vllm serve "$@"` side by side as PID 1's children. Signals sent to the container reach
# both; when vLLM exits, Prometheus is stopped and the container exits with vLLM's exit code. Prometheus
# exiting on its own does not stop serving.
set -uo pipefail

# Traps first: a signal that came before them would end this shell with its default action, and the
# children would never hear of it. One that comes before a child has started skips that child.
prometheus_pid=""
vllm_pid=""
# shellcheck disable=SC2317  # called only by the traps below
forward() {
    local pid
    for pid in "${vllm_pid}" "${prometheus_pid}"; do
        if [[ -n "${pid}" ]]; then
            kill -s "$1" "${pid}" 2>/dev/null || true
        fi
    done
}
for signal in TERM INT HUP QUIT USR1 USR2; do
    # shellcheck disable=SC2064  # the signal name is meant to be expanded now
    trap "forward ${signal}" "${signal}"
done

prometheus \
    --config.file="${PROMETHEUS_CONFIG:-/etc/prometheus/prometheus.yml}" \
    --storage.tsdb.path="${PROMETHEUS_DATA:-/prometheus}" \
    --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-7d}" \
    --web.listen-address="${PROMETHEUS_LISTEN_ADDRESS:-0.0.0.0:9090}" &
prometheus_pid=$!
vllm serve "$@" &
vllm_pid=$!

# A trapped signal interrupts `wait` (status > 128) while vLLM may still be shutting down: wait again.
while :; do
    wait "${vllm_pid}"
    status=$?
    kill -0 "${vllm_pid}" 2>/dev/null || break
done
# If vLLM exited between an interrupted wait and the check, bash still holds its real status.
wait "${vllm_pid}" 2>/dev/null
again=$?
if ((again != 127)); then
    status=${again}
fi

kill -s TERM "${prometheus_pid}" 2>/dev/null || true
wait "${prometheus_pid}" 2>/dev/null || true
exit "${status}"
