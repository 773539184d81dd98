#!/bin/sh
# Plum example app: greets, then prints a heartbeat every 5 s until it is stopped.
trap 'echo stopping; exit 0' TERM

echo "hello from ${PLUM_APP_NAME:-hello} ${PLUM_APP_VERSION:-?}" \
    "(instance ${PLUM_INSTANCE_ID:-?} on node ${WORKER_NODE_ID:-?})"

n=0
while true; do
    n=$((n + 1))
    echo "heartbeat $n"
    # Sleep in the background and wait, so the TERM trap runs at once rather than when sleep ends;
    # the sleeper's output goes to /dev/null so it does not hold the log pipe open after we exit.
    sleep 5 >/dev/null 2>&1 &
    wait $!
done
