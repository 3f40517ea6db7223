#!/usr/bin/env bash
# Download the wheels that scripts/gpu/run_sd2_benchmark.sh installs on the GPU machine into .whl/ (git-ignored).
#
#   scripts/gpu/fetch_wheels.sh
#
# The GPU machine (Python 3.12, no package index) has torch, transformers and every dependency of
# cafe_core's inference path except diffusers. Two wheels travel, at the versions of this checkout's
# environment, so that the GPU runs the code that the tests here run:
# - diffusers: absent there. Its own dependencies are all there, except importlib_metadata, which
#   diffusers imports on Python < 3.8 only.
# - transformers: the GPU machine has 5.17, which names the KV cache `past_key_values` (CafeAssistant
#   asks the signature and works with both names); carrying this checkout's release keeps the GPU run
#   on the exact code the tests run. Its dependencies (huggingface-hub, tokenizers, regex,
#   safetensors, typer) are there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

read -r diffusers transformers < <(bin/with-env python -c \
  'import importlib.metadata as m; print(m.version("diffusers"), m.version("transformers"))')

mkdir -p .whl
rm -f .whl/diffusers-*.whl .whl/transformers-*.whl  # two versions of one package stop the install there
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "diffusers==$diffusers" "transformers==$transformers"

ls -l .whl/*.whl
du -ch .whl/*.whl | tail -n 1
