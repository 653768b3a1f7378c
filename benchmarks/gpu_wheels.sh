#!/usr/bin/env bash
# The wheels the GPU machine lacks (../shared/reference/gpu.md lists what its image holds), downloaded here into
# .whl/ (git-ignored) for `run` to carry: `bash benchmarks/gpu_wheels.sh`, then `OUT=$OUT bash benchmarks/gpu_round.sh`
# there with carry [".whl"]. Python 3.12 wheels for x86_64; ~57 MB of the 64 MiB a run can carry.
# transformers 5.25+ would need huggingface_hub >= 2.4 and more wheels, so 5.23 (within setup.cfg's range) goes.
# tenacity (not among what gpu.md saw in the image): the benchmarks import the builders, whose fetcher retries with it.
set -eu
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform any -d .whl \
  bitsandbytes==0.50.2 trl==1.16.0 datasets==5.2.0 transformers==5.23.0 peft==0.21.2 dill==0.4.1 \
  multiprocess==0.70.19 tenacity==9.2.1
du -sh .whl
