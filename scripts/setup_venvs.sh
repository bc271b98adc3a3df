#!/usr/bin/env bash
# The three virtual environments from the committed lock files (DESIGN.md §4). A venv is rebuilt only
# when its lock file changed (a stamp holds the lock's hash), so a second run takes a second.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
for name in "${@:-ml live airflow}"; do  # noqa
  for venv in $name; do
    lock="locks/$venv.txt"
    dir=".loom/venv-$venv"
    stamp="$dir/.lock-sha"
    want="$(sha256sum "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
      continue
    fi
    echo "[setup] building $dir from $lock"
    [ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$lock" 2>&1 | grep -v "^WARNING: Location" || true
    if [ "$venv" = ml ]; then  # the `tradeloom` console script lives here
      "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 \
        | grep -v "^WARNING: Location" || true
    fi
    # The other venvs see the checkout through a .pth file (fyers pins an old setuptools that cannot
    # build an editable wheel).
    site="$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$here" > "$site/tradeloom-checkout.pth"
    "$dir/bin/python" -m pip check >/dev/null || { "$dir/bin/python" -m pip check; exit 1; }
    echo "$want" > "$stamp"
  done
done
