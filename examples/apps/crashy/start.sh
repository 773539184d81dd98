#!/bin/sh
# Plum example app that crashes: exits with code 3 after CRASH_AFTER seconds (default 1).
echo "crashy ${PLUM_APP_VERSION:-?} (instance ${PLUM_INSTANCE_ID:-?}): exiting with 3 in ${CRASH_AFTER:-1}s"
sleep "${CRASH_AFTER:-1}"
exit 3
