#!/usr/bin/env bash
# Idempotent setup for a fresh machine: the system packages the real servers need, and a venv with the
# project and its test extra. Cheap when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need_apt+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || need_apt+=(ldap-utils)
# Headers python-ldap (the fast directory reader) builds against.
[ -f /usr/include/ldap.h ] || need_apt+=(libldap2-dev)
[ -f /usr/include/sasl/sasl.h ] || need_apt+=(libsasl2-dev)
# The production topology the demo (--workers) and the tests start for themselves: nginx in front,
# PostgreSQL (initdb/pg_ctl of the Debian package) and Redis. Each runs privately on a loopback port.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The TLS test makes a self-signed pair.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The deploy test checks the systemd units with `systemd-analyze verify` (Debian: package systemd). In a
# container that is harmless: without systemd as PID 1 the package's scripts start nothing (and policy-rc.d
# below forbids it anyway), and systemd-sysv, which would make it the init system, is not pulled in.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# The bot's interop test drives Element's own SDK (matrix-js-sdk, Rust crypto) under Node.js >= 20.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root or: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The Debian packages would start system services (slapd, nginx, PostgreSQL, Redis); ours run on their
  # own ports with their own config, so package scripts may not start anything.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.civmatrix-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the project and its test extra into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
