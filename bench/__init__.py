"""lakenet benchmarks: each `python -m bench.<name>` prints a table and writes `bench/results/<name>.json`.

How we measure (interleaved A/B pairs, ratios, CPU seconds, pinned threads): /work/shared/BENCHMARKS.md.
The thread environment is pinned here, before any benchmark module imports torch.
"""

import os


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(_cores()))
for _var, _value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "1"), ("GIT_PYTHON_REFRESH", "quiet")):
    os.environ.setdefault(_var, _value)
