#!/usr/bin/env bash
# Wheels for bench/gpu_check.py on the lent GPU machine, into the git-ignored .whl/.
#
# That machine has Python 3.12 with torch (CUDA), Lightning, numpy, matplotlib, PyYAML and
# cloudpickle, but not Hydra, omegaconf, soundfile or soxr, and it reaches no package
# index. So the missing packages travel as wheels built here, at the versions installed
# in $PYTHON's environment (the ones the tests ran). W&B is left out: every run of the
# check logs with logger=none. antlr4-python3-runtime 4.9.x (Hydra's and omegaconf's
# parser) exists on PyPI only as a source archive: it is built here (pure Python).
#
#   make gpu-wheels                 # = PYTHON=.venv/bin/python bash bench/gpu_wheels.sh
#   DEVICE_PY=3.13 bash bench/gpu_wheels.sh
#
# The prepared device command that installs them is in bench/gpu_check.py's docstring.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEST=${DEST:-.whl}
DEVICE_PY=${DEVICE_PY:-3.12}
# what the steps import that the device lacks, with what those need in turn
PACKAGES="hydra-core omegaconf antlr4-python3-runtime soundfile cffi pycparser soxr"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)

# shellcheck disable=SC2086
PINS=$("$PY" - $PACKAGES <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

pins = []
for name in sys.argv[1:]:
    try:
        pins.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"error: {name} is not installed for {sys.executable}: run `make install` "
                 "first (the wheels take the versions the tests ran)")
print(" ".join(pins))
EOF
)

TMP="$DEST.tmp"
rm -rf "$TMP"
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
for pin in $PINS; do
    case $pin in
        antlr4-python3-runtime==*)
            "$PY" -m pip wheel -q --no-deps -w "$TMP" "$pin" ;;
        *)
            "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PY" \
                --implementation cp "${PLATFORMS[@]}" -d "$TMP" "$pin" ;;
    esac
done

n=$(find "$TMP" -name '*.whl' | wc -l)
want=$(echo "$PACKAGES" | wc -w)
if [ "$n" -ne "$want" ]; then
    echo "error: $n wheels for $want packages in $TMP (one version of each is needed)" >&2
    exit 1
fi
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
echo "$DEST/ for Python $DEVICE_PY ($(du -sh "$DEST" | cut -f1)): $PINS"
