"""`lakenet profile`: one scan of the config's table on its engine, a JSON + HTML profile, bad rows quarantined."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakenet.config.loader import config_hash
from lakenet.config.schema import Config
from lakenet.data.profile import Profile
from lakenet.data.quarantine import write_quarantine
from lakenet.engines import get_engine
from lakenet.workflows.common import atomic_write, backbone_resolver, reports_dir, write_json

if TYPE_CHECKING:
    from lakenet.data.scan import ScanResult
    from lakenet.training.plan import TrainPlan

__all__ = ["ProfileResult", "run_profile", "scan", "write_profile"]


@dataclass(frozen=True)
class ProfileResult:
    profile: Profile  # profile.json is profile.to_dict()
    json_path: Path
    html_path: Path
    quarantine: str | None


def scan(
    cfg: Config, version: int | None = None, wd: Path | None = None, spark: Any = None
) -> tuple[TrainPlan, str | None]:
    """Plan and scan on the config's engine (on Spark the executors read and profile the fragments); the bad
    rows go to the quarantine table, whose URI comes back with the plan."""
    from lakenet.training.plan import plan_training

    engine = get_engine(cfg.engine, spark=spark)
    resolver = backbone_resolver(wd or Path.cwd(), cfg.tracking)
    plan = plan_training(cfg, version=version, engine=engine, resolve_backbone=resolver)
    quarantine = write_quarantine(plan.scan, job=config_hash(cfg))
    return plan, quarantine


def write_profile(result: ScanResult, out: Path) -> tuple[Path, Path]:
    from lakenet.reports import profile_html

    json_path, html_path = write_json(out / "profile.json", result.profile.to_dict()), out / "profile.html"
    atomic_write(html_path, profile_html(result.profile))
    return json_path, html_path


def run_profile(cfg: Config, wd: Path, *, spark: Any = None) -> ProfileResult:
    plan, quarantine = scan(cfg, wd=wd, spark=spark)
    json_path, html_path = write_profile(plan.scan, reports_dir(cfg, wd))
    return ProfileResult(plan.scan.profile, json_path, html_path, quarantine)
