#!/usr/bin/env bash
# Run HERE (not on the device machine): downloads into .whl/ the wheels the device machine's
# Python 3.12 image lacks (it has torch, numpy, h5py, scipy, xarray, matplotlib, seaborn, click,
# tqdm, pyyaml, xxhash, safetensors; see .library/device/KINDS.md), at this project's versions.
# .whl/ is ignored through .git/info/exclude and travels with `carry: [".whl"]`.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
         manylinux_2_35_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl \
    mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 websockets glfw==2.11.0 \
    pyopengl==3.1.10 gymnasium==1.4.0 farama-notifications==0.0.6 pydantic==2.14.4 \
    pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 h5netcdf==1.8.3 \
    pandas==3.1.1
du -sh .whl
