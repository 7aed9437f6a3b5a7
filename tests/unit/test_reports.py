"""Checks the HTML reports are complete, escaped, self-contained documents that tolerate partial input."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from PIL import Image

from lakenet.reports import (
    bar_chart_svg,
    data_table,
    evaluation_html,
    heatmap_table,
    image_grid,
    kv_table,
    line_chart_svg,
    page,
    profile_html,
    scatter_svg,
)
from lakenet.reports.html import _nice_range

EVIL = "<script>alert(1)</script>"
VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base", "embed"}
SVG_LEAVES = {"line", "rect", "circle", "polyline", "path"}


def _png(colour: str = "red") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class _Checker(HTMLParser):
    """Records headings and fails on tags closed out of order, so a report is known to be well formed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)
        self._in_heading = tag in {"h1", "h2", "h3"}
        if self._in_heading:
            self.headings.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag in {"h1", "h2", "h3"}:
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_heading:
            self.headings[-1] += data


def _check_document(doc: str) -> _Checker:
    assert doc.startswith("<!DOCTYPE html>")
    assert doc.rstrip().endswith("</html>")
    for tag in ("<html", "<head>", '<meta charset="utf-8">', "<title>", "<style>", "<body>", "</body>"):
        assert tag in doc, tag
    checker = _Checker()
    checker.feed(doc)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    _assert_self_contained(doc)
    return checker


def _assert_self_contained(doc: str) -> None:
    assert "<link" not in doc
    assert "<script" not in doc.lower()
    assert "@import" not in doc
    assert "url(" not in doc
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", doc, re.IGNORECASE)
    for src in re.findall(r'src="([^"]*)"', doc):
        assert src.startswith("data:image/"), src


def _full_profile() -> dict[str, Any]:
    return {
        "table": {"uri": "s3://lake/pets", "version": 7, "rows": 12345, "format": "delta"},
        "columns": [
            {"name": "image", "type": "binary", "nulls": 45, "min": None, "max": None, "distinct": None},
            {
                "name": "price",
                "type": "double",
                "nulls": 0,
                "min": 0.5,
                "max": 99.25,
                "distinct": 800,
                "mean": 12.5,
            },
        ],
        "splits": {"train": 9876, "val": 1234, "test": 1235},
        "label": {
            "column": "species",
            "task": "classification",
            "counts": {"cat": 7000, "dog": 5000, EVIL: 345},
            "by_split": {"train": {"cat": 5600, "dog": 4000}, "val": {"cat": 700, "dog": 500}, "test": {}},
        },
        "images": {
            "column": "image",
            "count": 12345,
            "undecodable": 3,
            "sizes": [[640, 480, 2345], [224, 224, 10000]],
            "modes": {"RGB": 12000, "L": 345},
            "samples": {"cat": [_png("red"), _png("blue")], EVIL: [_png("green")]},
        },
        "duplicates": {"rows": 4, "groups": 2, "examples": [["k1", "k2"], ["k3", "k4"]]},
        "leakage": {"rows": 2, "examples": [{"keys": ["k9", "k10"], "splits": ["train", "test"]}]},
        "bad_rows": {
            "total": 7,
            "fraction": 0.0005,
            "by_reason": {"undecodable image": 3, "null label": 4},
            "examples": [{"key": "k42", "reason": "null label", "column": "species", "source": "part-0.parquet"}],
        },
        "warnings": ["3 images could not be decoded", f"class {EVIL} has only 345 rows"],
    }


def _full_evaluation() -> dict[str, Any]:
    return {
        "model": {"name": "pets-resnet", "version": 3, "uri": "models:/pets-resnet/3"},
        "task": "classification",
        "split": "test",
        "rows": 1235,
        "metrics": {"test_accuracy": 0.87654321, "test_macro_f1": 0.8, "test_loss": 0.3125},
        "classes": ["cat", "dog", EVIL],
        "confusion_matrix": [[500, 80, 20], [50, 440, 10], [1, 2, 132]],
        "per_class": {
            "cat": {"precision": 0.9074, "recall": 0.8333, "f1": 0.8688, "support": 600},
            EVIL: {"precision": 0.8, "recall": 0.97, "f1": 0.88, "support": 135},
        },
        "history": [
            {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 1 - 0.5 / e, "lr": 0.1}
            for e in range(1, 6)
        ],
        "worst": [
            {"key": "k7", "label": "cat", "prediction": "dog", "confidence": 0.987, "thumbnail": _png()},
            {"key": "k8", "label": EVIL, "prediction": "cat", "confidence": 0.9, "thumbnail": None},
        ],
    }


# --- building blocks ----------------------------------------------------------------------------------


def test_bar_chart_draws_one_bar_per_value_and_escapes_labels() -> None:
    svg = bar_chart_svg(["a", EVIL, "c"], [3, 10, 0], title="Counts & more")
    assert svg.count("<svg") == 1  # bar counts: test_charts_are_matplotlib_figures_with_one_artist_per_value
    assert "Counts &amp; more" in svg
    assert EVIL not in svg
    assert "&lt;script&gt;" in svg
    assert ">10<" in svg  # value printed next to the bar


def test_bar_chart_caps_bars_and_handles_empty() -> None:
    svg = bar_chart_svg([str(i) for i in range(100)], list(range(100)), title="t", max_bars=10)
    assert ">9<" in svg and ">10<" not in svg  # bars 0-9 drawn, value labels printed
    assert "First 10 of 100 bars shown" in svg
    assert "no data" in bar_chart_svg([], [], title="t")


def test_line_chart_has_a_line_and_legend_entry_per_series() -> None:
    svg = line_chart_svg(
        {"train_loss": [(1, 1.0), (2, 0.5), (3, float("nan"))], EVIL: [(1, 1.2), (2, 0.7)]},
        title="Loss",
        x_label="epoch",
        y_label="loss",
    )
    assert "train_loss" in svg
    assert EVIL not in svg
    assert svg.count('class="swatch"') == 2
    assert ">epoch<" in svg
    assert ">loss<" in svg
    # NaN point dropped: see test_charts_are_matplotlib_figures_with_one_artist_per_value for artist counts.
    assert "no data" in line_chart_svg({}, title="t", x_label="x", y_label="y")
    assert "no data" in line_chart_svg({"a": [(1, float("inf"))]}, title="t", x_label="x", y_label="y")


def test_nice_range_covers_data_with_round_ticks() -> None:
    lo, hi, ticks = _nice_range(0.1, 1.25)
    assert lo < 0.1
    assert hi > 1.25
    assert ticks == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25])
    # Integer axes (epochs) never get fractional ticks.
    _, _, epoch_ticks = _nice_range(1, 3, integer=True)
    assert epoch_ticks == [1.0, 2.0, 3.0]
    # A single value still yields a usable axis.
    lo, hi, ticks = _nice_range(5.0, 5.0)
    assert lo < 5.0 < hi
    assert len(ticks) >= 2


def test_scatter_draws_points_and_diagonal() -> None:
    svg = scatter_svg(
        [(1.0, 1.1), (2.0, 1.9), (3.0, None), (4.0, 4.2)], title="t", x_label="a", y_label="p", diagonal=True
    )
    assert "y = x" in svg
    many = scatter_svg([(float(i), float(i)) for i in range(5000)], title="t", x_label="x", y_label="y")
    assert "2,000 of 5,000 points shown" in many
    assert "no data" in scatter_svg([], title="t", x_label="x", y_label="y")


def test_heatmap_shades_by_row_share_and_marks_diagonal() -> None:
    out = heatmap_table([[3, 1], [0, 4]], ["a", EVIL], ["a", EVIL], title="CM")
    assert "rgba(78,121,167,0.750)" in out
    assert "rgba(78,121,167,0.250)" in out
    assert "rgba(78,121,167,1.000)" in out
    assert out.count('class="diag"') == 2
    assert EVIL not in out
    overall = heatmap_table([[3, 1], [0, 4]], ["a", "b"], ["a", "b"], title="CM", normalize="all")
    assert "rgba(78,121,167,0.250)" in overall  # 1 of the largest cell 4
    assert "no data" in heatmap_table([], [], [], title="CM")


def test_image_grid_embeds_data_uris_and_rejects_anything_else() -> None:
    png = _png()
    out = image_grid([("ok", png), ("bad", 'x" onerror="alert(1)'), ("none", None), (EVIL, "data:" + "zz")])
    assert f'src="data:image/png;base64,{png}"' in out
    assert out.count("<img") == 1
    assert out.count("image unavailable") == 3
    assert "onerror" not in out
    assert EVIL not in out
    jpeg_like = image_grid([("j", "/9j/4AAQSkZJRg==")])
    assert 'src="data:image/jpeg;base64,' in jpeg_like
    assert "no images" in image_grid([])


def test_kv_and_data_tables_escape_and_format() -> None:
    kv = kv_table({"rows": 1234567, EVIL: {"nested": [1, 2]}, "ratio": 0.12345678, "missing": None})
    assert "1,234,567" in kv
    assert "0.1235" in kv
    assert "—" in kv
    assert EVIL not in kv
    assert "&lt;script&gt;" in kv
    assert "no data" in kv_table({})
    table = data_table(["a", "b"], [[1, EVIL], [2.5, None]], numeric=[True, False])
    assert table.count("<tr>") == 3
    assert '<td class="num">2.5</td>' in table
    assert EVIL not in table


def test_page_is_a_complete_document_with_escaped_title_and_navigation() -> None:
    doc = page(f"Report {EVIL}", [("First & only", "<p>body</p>"), ("First & only", "<p>again</p>")])
    checker = _check_document(doc)
    assert EVIL not in doc
    assert checker.headings[0] == f"Report {EVIL}"
    assert checker.headings[1:] == ["First & only", "First & only"]
    assert 'href="#s1-first-only"' in doc
    assert 'id="s2-first-only"' in doc  # duplicate headings still get distinct anchors
    assert '<meta name="viewport"' in doc
    _check_document(page("", []))


# --- profile report -----------------------------------------------------------------------------------


def test_profile_report_renders_every_section() -> None:
    doc = profile_html(_full_profile())
    checker = _check_document(doc)
    assert EVIL not in doc
    assert checker.headings[0] == "Data profile: s3://lake/pets"
    for heading in ("Overview", "Columns", "Label balance", "Images", "Duplicates and leakage", "Bad rows"):
        assert heading in checker.headings
    text = "".join(checker.text)
    for expected in (
        "12,345",  # rows
        "9,876",  # train split
        "80.0%",  # train share of 12,345
        "45 (0.4%)",  # null count with share
        "12.5",
        "224x224",
        "640x480",
        "RGB",
        "k9, k10",
        "train, test",
        "null label",
        "part-0.parquet",
        "0.05%",
        "3 images could not be decoded",
        f"class {EVIL} has only 345 rows",
    ):
        assert expected in text, expected
    assert doc.count("<li>") == 2  # warnings are highlighted as list items
    assert doc.count("<img") == 3  # sample thumbnails, one per sample
    assert "<h3>cat</h3>" in doc
    assert "<h3>&lt;script&gt;alert(1)&lt;/script&gt;</h3>" in doc
    # The most common size comes first in the size chart.
    assert doc.index("224x224") < doc.index("640x480")


def test_profile_report_for_regression_shows_target_statistics() -> None:
    doc = profile_html({"label": {"column": "price", "task": "regression", "stats": {"mean": 12.25, "std": 3.5}}})
    text = "".join(_check_document(doc).text)
    assert "Target statistics" in text
    assert "12.25" in text
    assert "3.5" in text


@pytest.mark.parametrize(
    "profile",
    [
        {},
        {"table": None, "columns": None, "label": None, "images": None, "warnings": None},
        {"table": "oops", "columns": [None, 3, {"name": None}], "splits": {"train": "many"}},
        {
            "label": {"counts": {"a": None, "b": True}, "by_split": {"train": None}},
            "images": {"sizes": [[1], None]},
        },
        {
            "bad_rows": {"fraction": "n/a", "by_reason": [], "examples": [None]},
            "duplicates": {"examples": "x"},
        },
    ],
)
def test_profile_report_tolerates_missing_and_malformed_keys(profile: dict[str, Any]) -> None:
    doc = profile_html(profile)
    checker = _check_document(doc)
    assert "Overview" in checker.headings


def test_empty_profile_report_says_there_is_no_data() -> None:
    doc = profile_html({})
    checker = _check_document(doc)
    assert checker.headings == ["Data profile", "Overview"]
    assert "no table information" in doc


# --- evaluation report --------------------------------------------------------------------------------


def test_evaluation_report_for_classification() -> None:
    doc = evaluation_html(_full_evaluation())
    checker = _check_document(doc)
    assert EVIL not in doc
    assert checker.headings[0] == "Model evaluation: pets-resnet v3 on test"
    for heading in (
        "Summary",
        "Metrics",
        "Confusion matrix",
        "Per-class metrics",
        "Learning curves",
        "Most confidently wrong",
    ):
        assert heading in checker.headings
    assert "Predicted vs actual" not in checker.headings
    text = "".join(checker.text)
    for expected in (
        "0.8765",
        "0.3125",
        "lower is better",
        "higher is better",
        "models:/pets-resnet/3",
        "1,235",
    ):
        assert expected in text, expected
    # Confusion matrix: one diagonal cell per class, counts shown.
    assert doc.count('class="diag"') == 3
    assert ">440<" in doc
    # Learning curves: one loss chart with train and val loss, one metrics chart; lr is not plotted.
    assert doc.count("<svg") == 2  # the loss chart and the validation-metrics chart
    assert "val_accuracy" in text
    assert ">lr<" not in doc
    # Worst examples: thumbnail grid with "key: label→prediction (conf)" captions.
    assert "k7: cat→dog (0.99)" in text
    assert f"k8: {EVIL}→cat (0.90)" in text
    assert doc.count("<img") == 1


def test_evaluation_report_for_regression_without_thumbnails() -> None:
    report = {
        "model": {"name": "price-mlp", "version": "v2"},
        "task": "regression",
        "metrics": {"test_rmse": 1.5, "test_r2": 0.93},
        "scatter": [[float(i), float(i) + 0.5] for i in range(50)],
        "worst": [{"key": "row-1", "label": "10.0", "prediction": "55.0", "confidence": None}],
    }
    doc = evaluation_html(report)
    checker = _check_document(doc)
    assert checker.headings[0] == "Model evaluation: price-mlp v2"
    assert "Predicted vs actual" in checker.headings
    assert "Confusion matrix" not in checker.headings
    assert doc.count("<svg") == 1
    assert "y = x" in doc
    text = "".join(checker.text)
    assert "row-1" in text
    assert "55.0" in text
    assert "<img" not in doc


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"model": None, "metrics": None, "history": None, "worst": None, "scatter": None},
        {"metrics": {"val_loss": "nan?"}, "confusion_matrix": [[1, "x"], [2]], "classes": None},
        {"history": [None, {"epoch": "one", "train_loss": None}], "scatter": [[1], None, ["a", 2]]},
        {"per_class": {"a": None}, "worst": [None, {"thumbnail": 42}]},
    ],
)
def test_evaluation_report_tolerates_missing_and_malformed_keys(report: dict[str, Any]) -> None:
    checker = _check_document(evaluation_html(report))
    assert "Summary" in checker.headings


def test_empty_evaluation_report_says_there_is_no_data() -> None:
    doc = evaluation_html({})
    checker = _check_document(doc)
    assert checker.headings == ["Model evaluation", "Summary"]
    assert "no model information" in doc


def test_tune_report_draws_history_curves_importances_and_parallel_axes() -> None:
    from lakenet.reports import tune_html

    trials = [
        {"number": 0, "state": "complete", "value": 0.80, "params": {"lr": 0.01, "width": 32},
         "intermediate": {"1": 0.5, "2": 0.7, "3": 0.8}, "epochs": 3, "seconds": 1.0},
        {"number": 1, "state": "pruned", "value": None, "params": {"lr": 0.0001, "width": 64},
         "intermediate": {"1": 0.2}, "epochs": 1, "reason": "pruned after epoch 1"},
        {"number": 2, "state": "complete", "value": 0.90, "params": {"lr": 0.05, "width": 64},
         "intermediate": {"1": 0.6, "2": 0.8, "3": 0.9}, "epochs": 3},
        {"number": 3, "state": "failed", "value": None, "params": {"lr": 0.3, "width": 32},
         "reason": "<non-finite> loss"},
    ]  # fmt: skip
    summary = {
        "study": "wine-abc",
        "metric": "val_accuracy",
        "direction": "maximize",
        "counts": {"complete": 2, "pruned": 1, "failed": 1},
        "best_value": 0.9,
        "best_trial": 2,
        "best_params": {"lr": 0.05, "width": 64},
        "importances": {"lr": 0.8, "width": 0.2},
        "space": {"lr": {"log_uniform": [1e-4, 0.3]}, "width": {"choice": [32, 64]}},
        "trials": trials,
    }
    html = tune_html(summary)
    for heading in ("Optimisation history", "Parameter importances", "Parallel coordinates", "Trials"):
        assert f"<h2>{heading}</h2>" in html
    assert "pruned (last reported value)" in html and "best so far" in html
    assert html.count("<svg") == 4  # history, per-epoch curves, importances, parallel coordinates
    assert "&lt;non-finite&gt; loss" in html  # reasons are escaped
    # a study with nothing finished yet still renders
    empty = tune_html({"study": "s", "trials": [], "importance_note": "need 3 complete trials"})
    assert "no trial reported a value yet" in empty and "need 3 complete trials" in empty


def test_missing_values_and_the_baseline_are_reported() -> None:
    from lakenet.reports import evaluation_html, profile_html

    html = evaluation_html(
        {
            "metrics": {"test_roc_auc": 0.91},
            "baseline": {
                "model": "HistGradientBoostingClassifier",
                "metrics": {"roc_auc": 0.89},
                "summary": "The deep model wins <really>",
            },
        }
    )
    assert "HistGradientBoostingClassifier" in html and "&lt;really&gt;" in html and "0.89" in html
    profile = profile_html(
        {
            "missing": {"amount": {"column": "amount", "missing": 3, "rate": 0.02, "action": "filled: median"}},
            "unlabelled": {"total": 2},
        }
    )
    assert "Missing values" in profile and "2.0%" in profile and "no label" in profile


# --- matplotlib charts and Jinja templates ------------------------------------------------------------


def test_charts_are_matplotlib_figures_with_one_artist_per_value() -> None:
    from lakenet.reports.charts import bar_figure, line_figure, scatter_figure, styled

    with styled():
        bars = bar_figure(["a", EVIL, "c"], [3, 10, None])
        lines = line_figure({"train_loss": [(1, 1.0), (2, 0.5)], "val_loss": [(1, 1.2)]}, x_label="e", y_label="l")
        scatter = scatter_figure([(1.0, 1.1), (2.0, 1.9)], x_label="a", y_label="p", diagonal=True)
    assert len(bars.axes[0].patches) == 3
    assert [t.get_text() for t in bars.axes[0].texts] == ["3", "10", "—"]  # printed values; None is no bar
    assert [len(line.get_xdata()) for line in lines.axes[0].lines] == [2, 1]
    (points,) = scatter.axes[0].collections
    assert len(points.get_offsets()) == 2
    assert scatter.axes[0].get_xlim() == scatter.axes[0].get_ylim()  # y = x needs equal axes
    assert [line.get_label() for line in scatter.axes[0].lines] == ["y = x"]


def test_scatter_and_curves_are_capped_and_skip_non_finite_points() -> None:
    svg = scatter_svg([(float(i), float(i)) for i in range(5000)], title="t", x_label="x", y_label="y")
    assert "2,000 of 5,000 points shown" in svg
    line = line_chart_svg({"a": [(1, 1.0), (2, float("nan")), (3, 2.0)]}, title="t", x_label="x", y_label="y")
    assert line.count('class="swatch"') == 1


def test_figure_svg_is_an_inline_deterministic_self_contained_fragment() -> None:
    from lakenet.reports import figure_svg
    from lakenet.reports.charts import new_figure, styled

    def draw() -> str:
        with styled():
            fig = new_figure()
            ax = fig.subplots()
            ax.plot([1, 2, 3], [3, 1, 2], marker="o", label="$5 & <b>")  # no TeX, escaped
            ax.legend()
            return str(figure_svg(fig))

    svg = draw()
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<?xml" not in svg and "DOCTYPE" not in svg and "<metadata" not in svg
    assert "url(" not in svg and "http://www.w3.org/2000/svg" in svg
    assert ">$5 &amp; &lt;b&gt;</text>" in svg  # text stays text (svg.fonttype none)
    assert draw() == svg


def test_reports_render_byte_for_byte_the_same_twice() -> None:
    from lakenet.reports import tune_html

    assert evaluation_html(_full_evaluation()) == evaluation_html(_full_evaluation())
    assert profile_html(_full_profile()) == profile_html(_full_profile())
    summary = {"study": "s", "metric": "m", "direction": "minimize", "trials": [
        {"number": i, "state": "complete", "value": 1.0 / (i + 1), "params": {"x": i}, "intermediate": {"1": 1.0}}
        for i in range(3)
    ], "space": {"x": {"int_uniform": [0, 9]}}}  # fmt: skip
    assert tune_html(summary) == tune_html(summary)


def test_tune_history_marks_pruned_trials_and_the_best_so_far() -> None:
    from lakenet.reports.tune import _history_figure

    trials = [
        {"number": 0, "state": "complete", "value": 0.5},
        {"number": 1, "state": "pruned", "intermediate": {"1": 0.1, "2": 0.2}},
        {"number": 2, "state": "complete", "value": 0.3},
        {"number": 3, "state": "failed"},
    ]
    with matplotlib_style():
        fig = _history_figure(trials, maximize=False, metric="loss")
    assert fig is not None
    ax = fig.axes[0]
    pruned, done = ax.collections
    assert pruned.get_offsets().tolist() == [[1.0, 0.2]]  # the last value it reported
    assert done.get_offsets().tolist() == [[0.0, 0.5], [2.0, 0.3]]
    (best,) = ax.lines
    assert list(best.get_ydata()) == [0.5, 0.3, 0.3]  # minimising: the best so far only falls


def matplotlib_style() -> Any:
    from lakenet.reports.charts import styled

    return styled()


def test_reports_accept_objects_as_well_as_mappings() -> None:
    """Templates read x.field, which Jinja resolves as an attribute or a key: dataclass inputs work too."""
    from dataclasses import dataclass, field

    from lakenet.reports import tune_html

    @dataclass
    class Trial:
        number: int
        state: str
        value: float | None = None
        params: dict[str, Any] = field(default_factory=dict)
        intermediate: dict[str, float] = field(default_factory=dict)
        reason: str | None = None

    @dataclass
    class Summary:
        study: str
        metric: str
        direction: str
        trials: list[Trial]
        space: dict[str, Any]

    trials = [Trial(0, "complete", 0.8, {"lr": 0.1}, {"1": 0.8}), Trial(1, "complete", 0.9, {"lr": 0.01}, {"1": 0.9}),
              Trial(2, "pruned", None, {"lr": 0.3}, {"1": 0.2}, reason="pruned <early>")]  # fmt: skip
    as_objects = tune_html(Summary("s", "acc", "maximize", trials, {"lr": {"log_uniform": [1e-3, 1]}}))
    as_dicts = tune_html(
        {
            "study": "s",
            "metric": "acc",
            "direction": "maximize",
            "trials": [vars(t) for t in trials],
            "space": {"lr": {"log_uniform": [1e-3, 1]}},
        }
    )
    assert as_objects == as_dicts
    assert "pruned &lt;early&gt;" in as_objects and "needs at least 2 complete trials" not in as_objects


def test_templates_ship_with_the_package() -> None:
    from importlib.resources import files

    templates = files("lakenet.reports") / "templates"
    for name in ("base.html", "macros.html", "profile.html", "evaluation.html", "tune.html", "report.css"):
        assert (templates / name).is_file(), name
