"""`lakenet serve`'s options are ServeSettings' fields (name, default, description), and reach `api.serve`
under the fields' names; the older option spellings keep working."""

from __future__ import annotations

from typing import Any

import pytest

from lakenet import api, cli
from lakenet.serving.settings import ServeSettings, make_settings


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(api, "serve", lambda *a, **kw: calls.append((a, kw)))
    return calls


def _options() -> dict[str, Any]:
    return {p.name: p for p in cli.serve_command().params}


def test_every_setting_but_the_token_is_an_option_with_its_default_and_description() -> None:
    options = _options()
    for name, field in ServeSettings.model_fields.items():
        if name == "token":
            assert name not in options  # a secret on the command line shows in `ps`: --token-file instead
            continue
        opt = options[name]
        assert opt.opts == [f"--{name.replace('_', '-')}"]
        assert opt.default == field.default
        assert opt.help.startswith(field.description or "")
        assert not opt.hidden


def test_the_settings_reach_api_serve_under_their_field_names(served: list[Any]) -> None:
    cli.main(["serve", "models:/m@champion", "--max-batch-size", "8", "--max-inflight-requests", "5",
              "--follow-alias", "--log-level", "debug", "--workdir", "wd"])  # fmt: skip
    (args, kw) = served[0]
    assert args == ("models:/m@champion",)
    assert str(kw.pop("workdir")) == "wd"
    assert kw.pop("runtime") == "torch" and kw.pop("trust_modules") == () and kw.pop("token_file") is None
    assert set(kw) == set(ServeSettings.model_fields) - {"token"}
    assert (kw["max_batch_size"], kw["max_inflight_requests"], kw["follow_alias"]) == (8, 5, True)
    assert make_settings(**kw).log_level == "debug"


def test_the_older_option_names_keep_working(served: list[Any]) -> None:
    cli.main(["serve", "bundle", "--max-inflight", "16", "--timeout", "2.5", "--drain-timeout", "1",
              "--body-timeout", "3", "--poll-interval", "0.5", "--threads", "1", "--max-body-mb", "0.5",
              "--max-image-mpx", "1", "--max-request-mpx", "2"])  # fmt: skip
    kw = served[0][1]
    assert kw["max_inflight_requests"] == 16
    assert (kw["request_timeout_s"], kw["drain_timeout_s"], kw["body_timeout_s"]) == (2.5, 1.0, 3.0)
    assert (kw["poll_interval_s"], kw["torch_threads"]) == (0.5, 1)
    assert (kw["max_body_bytes"], kw["max_image_pixels"], kw["max_request_pixels"]) == (2**19, 2**20, 2**21)
    assert not {"max_inflight", "timeout", "threads", "max_body_mb"} & set(kw)


def test_an_unknown_option_is_a_usage_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "bundle", "--no-such-option", "1"])
    assert exc.value.code == 2
    assert "No such option: --no-such-option" in capsys.readouterr().err
