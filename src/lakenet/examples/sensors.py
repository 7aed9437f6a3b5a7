"""Machine sensor readings with planted faults, for `task: anomaly`: a reading id, the machine, an ISO timestamp,
an operating mode, and rpm, power, temperature, vibration and pressure that depend on each other the way a
machine's physics ties them (power follows rpm and mode, temperature follows power, vibration grows with rpm²),
with a few missing values. About 2 % of readings are faults, most of them inside every column's normal range:

- an overload: power far above what the rpm and mode draw (a binding bearing);
- a mode mismatch: a machine reported idle while it turns at full speed;
- a stuck sensor: vibration reads 0.0 while the machine runs;
- a hot spot: temperature far above what the power explains;
- a pressure leak: pressure drops while everything else looks normal.

Only inspected readings carry a label (`fault`: 1 or 0, about 30 % of rows, the rest null), as in a plant where
technicians check a sample: an anomaly model trains on every reading and uses the known faults where it has them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["FAULTS", "sensors_frame", "write_sensors_csv"]

FAULTS = ("overload", "mode_mismatch", "stuck_vibration", "hot_spot", "pressure_leak")
_MODES = {"idle": (0.05, 300.0), "run": (0.7, 1500.0), "boost": (0.25, 2400.0)}  # share, typical rpm
_START = pd.Timestamp("2026-03-01T00:00:00Z")


def sensors_frame(
    rows: int = 20_000, *, seed: int = 0, fault_rate: float = 0.02, labelled: float = 0.3
) -> pd.DataFrame:
    """The readings as a DataFrame (see the module docstring); `fault_kind` names the planted fault (for
    analysis; leave it out of the features)."""
    rng = np.random.default_rng(seed)
    modes = list(_MODES)
    mode = rng.choice(modes, rows, p=[_MODES[m][0] for m in modes])
    typical_rpm = np.array([_MODES[m][1] for m in mode])
    rpm = typical_rpm * rng.lognormal(0.0, 0.12, rows)
    machine = rng.integers(0, 40, rows)
    efficiency = 0.9 + 0.02 * (machine % 5)  # each machine draws a little more or less
    boost = mode == "boost"
    power = (0.004 * rpm * (1.0 + 0.35 * boost) / efficiency) * rng.lognormal(0.0, 0.05, rows)  # kW
    ambient = 18.0 + 6.0 * rng.standard_normal(rows).clip(-2, 2)
    temperature = ambient + 3.2 * power + rng.normal(0.0, 1.5, rows)
    vibration = 1e-6 * rpm**2 * rng.lognormal(0.0, 0.1, rows) + rng.normal(0.0, 0.05, rows).clip(-0.1, 0.1)
    vibration = np.abs(vibration)
    pressure = 4.0 + 0.0006 * rpm + rng.normal(0.0, 0.08, rows)  # bar
    kind = np.array([""] * rows, dtype=object)
    faulty = np.flatnonzero(rng.random(rows) < fault_rate)
    kinds = rng.choice(FAULTS, len(faulty))
    for i, k in zip(faulty, kinds, strict=True):
        kind[i] = k
        if k == "overload":
            power[i] *= rng.uniform(1.8, 2.6)
            temperature[i] = ambient[i] + 3.2 * power[i] + rng.normal(0.0, 1.5)
        elif k == "mode_mismatch":
            mode[i] = "idle" if mode[i] != "idle" else "boost"
        elif k == "stuck_vibration":
            vibration[i] = 0.0 if mode[i] != "idle" else vibration[i] + 2.5
        elif k == "hot_spot":
            temperature[i] += rng.uniform(14.0, 22.0)
        else:  # pressure_leak
            pressure[i] -= rng.uniform(0.5, 0.9)
    when = _START + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86400, rows)), unit="s")
    df = pd.DataFrame(
        {
            "reading_id": [f"R{i:07d}" for i in range(rows)],
            "machine": [f"M{m:02d}" for m in machine],
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mode": mode,
            "rpm": rpm.round(1),
            "power_kw": power.round(3),
            "temperature_c": temperature.round(2),
            "vibration_mm_s": vibration.round(3),
            "pressure_bar": pressure.round(3),
        }
    )
    for col, share in (("temperature_c", 0.01), ("pressure_bar", 0.015), ("vibration_mm_s", 0.005)):
        df.loc[rng.random(rows) < share, col] = np.nan  # a sensor that did not report: missing, not a fault
    fault = (kind != "").astype("float64")
    fault[rng.random(rows) >= labelled] = np.nan  # only inspected readings are labelled
    df["fault"] = pd.array(np.where(np.isnan(fault), pd.NA, fault), dtype="Int64")
    df["fault_kind"] = kind
    return df


def write_sensors_csv(path: str | Path, rows: int = 20_000, *, seed: int = 0) -> Path:
    """Write the readings to a CSV file (without `fault_kind`, which would give the answer away); its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sensors_frame(rows, seed=seed).drop(columns=["fault_kind"]).to_csv(out, index=False)
    return out
