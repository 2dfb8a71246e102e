#!/usr/bin/env bash
# `vllm serve "$@"`. The pod never uploads its torch.compile cache: compiled artifacts are code every later
# pod of the shape runs, so only the cache's writer publishes them (README, "Publishing the compile cache").
set -euo pipefail
exec vllm serve "$@"
