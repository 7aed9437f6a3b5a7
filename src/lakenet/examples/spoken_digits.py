"""Spoken digits, synthesised offline with espeak-ng (a Debian package): the words zero to nine in many voices
(English accents × voice variants), speeds and pitches, as WAV files in a folder with one sub-folder per digit,
ready for `lakenet ingest`. A file is named `<voice>_s<speed>_p<pitch>.wav`, so a split grouped by the voice
(`data.split: {group: path, group_pattern: '/([^/_]+)_s\\d+_p\\d+\\.wav$'}`) tests on voices training never heard.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["DIGITS", "VOICE_PATTERN", "espeak", "voices", "write_spoken_digits"]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
# The group of a file in the ingested table's `path` column: its voice.
VOICE_PATTERN = r"/([^/_]+)_s\d+_p\d+\.wav$"


def espeak() -> str | None:
    """The espeak-ng (or espeak) program on this machine, or None."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def voices(count: int | None = None, *, seed: int = 0) -> list[str]:
    """`count` voices (accent+variant, e.g. en-gb+f3), in a fixed shuffled order: every accent early on."""
    rng = np.random.default_rng(seed)
    grid = [f"{a}+{v}" for v in _VARIANTS for a in _ACCENTS]
    order = [grid[i] for i in rng.permutation(len(grid))]
    order.sort(key=lambda v: _VARIANTS.index(v.split("+")[1]) // 3)  # variants in rounds: a mix of m and f first
    return order[:count] if count is not None else order


def write_spoken_digits(
    out: str | Path,
    *,
    voice_count: int = 24,
    speeds: tuple[int, ...] = (130, 175),
    pitches: tuple[int, ...] = (35, 65),
    seed: int = 0,
    workers: int = 4,
) -> Path:
    """Write `10 × voice_count × len(speeds) × len(pitches)` WAV files under `out/<digit>/`; the folder. Raises
    RuntimeError when espeak-ng is not installed (`apt-get install espeak-ng`)."""
    program = espeak()
    if program is None:
        raise RuntimeError(
            "spoken digits need espeak-ng to synthesise speech offline: apt-get install espeak-ng (Debian/Ubuntu)"
        )
    root = Path(out)
    jobs = []
    for digit in DIGITS:
        (root / digit).mkdir(parents=True, exist_ok=True)
        for voice in voices(voice_count, seed=seed):
            for speed in speeds:
                for pitch in pitches:
                    name = f"{voice}_s{speed}_p{pitch}.wav"
                    jobs.append([program, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                                 str(root / digit / name), digit])  # fmt: skip

    def run(cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, jobs))
    return root
