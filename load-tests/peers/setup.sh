#!/usr/bin/env bash
# One virtual environment per peer under load-tests/.venvs/, from the requirements-*.txt files
# beside this script, rebuilt only when a requirements file changes. hubplane runs from the
# project's .venv (make venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venvs="$root/load-tests/.venvs"
python="${PYTHON:-python3}"
mkdir -p "$venvs"
for req in "$here"/requirements-*.txt; do
  name="$(basename "$req" .txt)"
  name="${name#requirements-}"
  venv="$venvs/$name"
  stamp="$venv/.requirements"
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
    continue
  fi
  echo "setting up $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # pip's notes about absent local index folders are noise here.
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" \
    2> >(grep -v '^WARNING: Location' >&2); then
    echo "warning: could not install the $name peer; it is left out" >&2
    rm -rf "$venv"
    continue
  fi
  cp "$req" "$stamp"
done
