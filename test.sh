#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine and runs them: ./test.sh [pytest args]
#
# Debian packages: texlive-latex-base texlive-latex-recommended (pdflatex) poppler-utils (PDF checks),
# nodejs npm (formula checks, only if node is missing), chromium (the HTML page in a browser),
# python3-venv (only if venv is missing).
# npm packages (katex, mathjax-full) go to tests/js/node_modules; Python ones to .venv.
# Every step is skipped when its result is already there, so a second run only runs pytest.
set -euo pipefail
cd "$(dirname "$0")"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
apt_updated=""

apt_install() {
  echo "test.sh: installing Debian packages: $*"
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq >/dev/null
    apt_updated=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have() { command -v "$1" >/dev/null 2>&1; }

if ! have pdflatex || ! have pdftotext; then
  apt_install texlive-latex-base texlive-latex-recommended poppler-utils
fi
if ! have node || ! have npm; then
  apt_install nodejs npm
fi
if ! have chromium; then
  apt_install chromium
fi
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  apt_install python3-venv
fi

# npm ci starts from scratch every time: run it only when the lock file changed.
stamp=tests/js/node_modules/.installed-lock.json
if ! cmp -s tests/js/package-lock.json "$stamp"; then
  echo "test.sh: installing katex and mathjax-full into tests/js"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp tests/js/package-lock.json "$stamp"
fi

if [ ! -x .venv/bin/python ]; then
  echo "test.sh: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.installed-pyproject.toml
if ! cmp -s pyproject.toml "$stamp"; then
  echo "test.sh: installing derive and its test dependencies into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  cp pyproject.toml "$stamp"
fi

exec .venv/bin/python -m pytest -q "$@"
