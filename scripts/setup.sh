#!/usr/bin/env bash
# Create .venv beside the code, install requirements.txt into it and the project itself as the editable
# package `cakes` (pip install -e .); once, and again when requirements.txt or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! cat requirements.txt pyproject.toml | cmp -s - .venv/.installed-requirements 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  cat requirements.txt pyproject.toml > .venv/.installed-requirements
fi
