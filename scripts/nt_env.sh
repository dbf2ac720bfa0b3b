#!/usr/bin/env bash
# Build neural-tangents' pinned environment in .nt-env (JAX 0.4.38, Flax 0.10.2, neural-tangents 0.6.5:
# the only combination where it imports) and write the reference fixtures with it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .nt-env/bin/python ]; then
  python -m venv .nt-env
  .nt-env/bin/pip install -q "jax==0.4.38" "jaxlib==0.4.38" "flax==0.10.2" "neural-tangents==0.6.5"
fi
JAX_PLATFORMS=cpu .nt-env/bin/python scripts/nt_fixtures.py
