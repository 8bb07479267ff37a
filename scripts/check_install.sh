#!/usr/bin/env bash
# A non-editable install in a fresh venv, run from another directory, must write the demo (issue 22).
# usage: scripts/check_install.sh [VENV_DIR]   (default: a temporary folder, removed afterwards)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$(mktemp -d)/venv}"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
pip install --quiet torch==2.13.0  # elsewhere: pip install torch --index-url https://download.pytorch.org/whl/cpu
pip install --quiet "$repo"
cd "$(mktemp -d)"
python -m fada_rt.generate --out demo.mp4
python - <<'PY'
import av
with av.open("demo.mp4") as c:
    v = c.streams.video[0]
    print(f"demo.mp4: {v.frames} frames {v.width}x{v.height}, audio: {bool(c.streams.audio)}")
    assert v.frames > 0 and c.streams.audio
PY
python -c "import importlib.util as u; assert all(u.find_spec(m) is None for m in ('train', 'benchmarks', 'export')), 'generic top-level packages installed'"
fada-generate --help > /dev/null
python -m fada_rt.export --help > /dev/null
echo "fresh non-editable install: OK ($(pwd)/demo.mp4)"
