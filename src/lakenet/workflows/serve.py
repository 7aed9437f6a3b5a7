"""`lakenet serve`: a model behind the HTTP server, optionally following a registry alias as it moves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakenet.errors import ConfigError
from lakenet.workflows.common import check_runtime, load_predictor

if TYPE_CHECKING:
    from lakenet.inference.predictor import Predictor
    from lakenet.serving.server import ServerHandle

__all__ = ["alias_ref", "run_serve"]


def alias_ref(model: str) -> tuple[str, str] | None:
    """`models:/name@alias` → (name, alias); None for a version number or a bundle directory."""
    body = model.removeprefix("models:/")
    if body == model or "@" not in body:
        return None
    name, alias = body.split("@", 1)
    return name, alias


def _alias_follower(
    ref: tuple[str, str], version: str | None, wd: Path, device: str, runtime: str, trust: tuple[str, ...]
) -> Callable[[], Predictor | None]:
    """A refresh function for the server: the Predictor of the version `name@alias` points to, once per new
    version (None while it has not moved). Runs on a worker thread."""
    from lakenet.tracking.store import alias_version

    name, alias = ref
    seen = [version]

    def refresh() -> Predictor | None:
        now = alias_version(name, alias)
        if now == seen[0]:
            return None
        predictor = load_predictor(f"models:/{name}/{now}", wd, device=device, runtime=runtime, trust=trust)
        seen[0] = now  # only once loaded: a failed download is retried at the next poll
        return predictor

    return refresh


def run_serve(
    model: str,
    wd: Path,
    *,
    settings: dict[str, Any],
    token_file: str | Path | None,
    runtime: str,
    trust: tuple[str, ...],
    background: bool,
) -> ServerHandle | None:
    from lakenet.serving.settings import make_settings, read_token_file

    if settings.get("token") is not None and token_file is not None:
        raise ConfigError("Pass either a token or a token file, not both.")
    if token_file is not None:
        settings = {**settings, "token": read_token_file(token_file)}
    s = make_settings(**settings)
    followed = alias_ref(model)
    if s.follow_alias and followed is None:
        raise ConfigError(
            f"--follow-alias needs a registry alias to follow (models:/name@alias), not {model!r}: a version number "
            "or a bundle directory never moves."
        )
    if s.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={s.device!r}, but torch {torch.__version__} sees no CUDA device.")
    check_runtime(runtime)
    predictor = load_predictor(model, wd, device=s.device, runtime=runtime, trust=trust)
    refresh = None
    if s.follow_alias and followed:
        refresh = _alias_follower(followed, predictor.model_version, wd, s.device, runtime, trust)
    from lakenet.serving.server import run, start_background

    if background:
        return start_background(predictor, s, refresh=refresh)
    run(predictor, s, refresh=refresh)
    return None
