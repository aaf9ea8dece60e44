#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Python Playwright (never `playwright install`).
# Install it with apt when missing and we are root; otherwise the browser tests skip, except
# under CI=true where they must run.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian chromium for the browser tests ..."
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -q chromium >/dev/null 2>&1) || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) \
    || echo "warning: could not install chromium with apt"
fi
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "${CI:-}" = true ]; then
  echo "error: /usr/bin/chromium is missing and CI=true requires the browser tests" >&2
  exit 1
fi
echo "note: /usr/bin/chromium is missing (not root or no apt): the browser tests will be skipped"
