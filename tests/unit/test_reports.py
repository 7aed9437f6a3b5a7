"""Checks the HTML reports are complete, escaped, self-contained documents, built from the typed profile, evaluation
and tuning summaries (whose to_dict() is the JSON beside each report)."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

import pytest
from PIL import Image

from lakenet.data.profile import (
    BadRowExample,
    BadRows,
    ColumnProfile,
    Duplicates,
    ImagesProfile,
    LabelProfile,
    LabelStats,
    Leakage,
    LeakExample,
    MissingProfile,
    Profile,
    TableInfo,
    Unlabelled,
)
from lakenet.evaluation.report import Baseline, ClassMetrics, Evaluation, Scores, Threshold, WorstExample
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
from lakenet.tuning.summary import TrialRow, TuneSummary

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


def _full_profile() -> Profile:
    return Profile(
        table=TableInfo(uri="s3://lake/pets", version=7, rows=12345, format="delta"),
        columns=[
            ColumnProfile(
                name="image",
                type="binary",
                nulls=45,
                missing_rate=45 / 12345,
                min=None,
                max=None,
                distinct=None,
                mean=None,
            ),
            ColumnProfile(
                name="price", type="double", nulls=0, missing_rate=0.0, min=0.5, max=99.25, distinct=800, mean=12.5
            ),
        ],
        splits={"train": 9876, "val": 1234, "test": 1235},
        unlabelled=Unlabelled(total=0, by_split={}),
        missing={},
        label=LabelProfile(
            column="species",
            task="classification",
            counts={"cat": 7000, "dog": 5000, EVIL: 345},
            by_split={"train": {"cat": 5600, "dog": 4000}, "val": {"cat": 700, "dog": 500}, "test": {}},
        ),
        images=ImagesProfile(
            column="image",
            count=12345,
            undecodable=3,
            sizes=[[640, 480, 2345], [224, 224, 10000]],
            modes={"RGB": 12000, "L": 345},
            samples={"cat": [_png("red"), _png("blue")], EVIL: [_png("green")]},
        ),
        duplicates=Duplicates(rows=4, groups=2, examples=[["k1", "k2"], ["k3", "k4"]]),
        leakage=Leakage(rows=2, examples=[LeakExample(keys=["k9", "k10"], splits=["train", "test"])]),
        bad_rows=BadRows(
            total=7,
            fraction=0.0005,
            by_reason={"undecodable image": 3, "null label": 4},
            examples=[BadRowExample(key="k42", reason="null label", column="species", source="part-0.parquet")],
        ),
        warnings=["3 images could not be decoded", f"class {EVIL} has only 345 rows"],
    )


def _empty_profile() -> Profile:
    """The profile of a table with no rows."""
    return Profile(
        table=TableInfo(uri="/data/empty", version=None, rows=0, format="parquet"),
        columns=[],
        splits={"train": 0, "val": 0, "test": 0},
        unlabelled=Unlabelled(total=0, by_split={}),
        missing={},
        label=LabelProfile(column="y", task="classification", counts={}, by_split={"train": {}, "val": {}, "test": {}}),
        images=None,
        duplicates=Duplicates(rows=0, groups=0, examples=[]),
        leakage=Leakage(rows=0, examples=[]),
        bad_rows=BadRows(total=0, fraction=0.0, by_reason={}, examples=[]),
        warnings=["the train split is empty"],
    )


def _full_evaluation() -> Evaluation:
    return Evaluation(
        model={"name": "pets-resnet", "version": 3, "uri": "models:/pets-resnet/3"},
        task="classification",
        split="test",
        rows=1235,
        skipped_rows=0,
        metrics={"test_accuracy": 0.87654321, "test_macro_f1": 0.8, "test_loss": 0.3125},
        classes=["cat", "dog", EVIL],
        confusion_matrix=[[500, 80, 20], [50, 440, 10], [1, 2, 132]],
        per_class={
            "cat": ClassMetrics(precision=0.9074, recall=0.8333, f1=0.8688, support=600),
            EVIL: ClassMetrics(precision=0.8, recall=0.97, f1=0.88, support=135),
        },
        history=[
            {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 1 - 0.5 / e, "lr": 0.1}
            for e in range(1, 6)
        ],
        worst=[
            WorstExample(key="k7", label="cat", prediction="dog", confidence=0.987, thumbnail=_png()),
            WorstExample(key="k8", label=EVIL, prediction="cat", confidence=0.9, thumbnail=None),
        ],
    )


def _trial(number: int, state: str, value: float | None = None, **fields: Any) -> TrialRow:
    row = {"params": {}, "intermediate": {}, "epochs": None, "seconds": None, "reason": None, "start": None}
    return TrialRow(number=number, state=state, value=value, **{**row, **fields})


def _summary(trials: list[TrialRow], **fields: Any) -> TuneSummary:
    done = [t for t in trials if t.state == "complete" and t.value is not None]
    best = max(done, key=lambda t: t.value or 0.0) if done else None
    base: dict[str, Any] = {
        "study": "s",
        "metric": "m",
        "direction": "maximize",
        "counts": {"complete": len(done)},
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "best_params": best.params if best else {},
        "importances": {},
        "importance_note": "parameter importances need at least 3 complete trials",
        "space": {},
    }
    return TuneSummary(**{**base, **fields}, trials=trials)


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
    label = LabelProfile(column="price", task="regression", stats=LabelStats(min=1.0, max=40.0, mean=12.25, std=3.5))
    doc = profile_html(replace(_full_profile(), label=label, images=None))
    checker = _check_document(doc)
    text = "".join(checker.text)
    assert "Target statistics" in text
    assert "12.25" in text
    assert "3.5" in text
    assert "Images" not in checker.headings


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"label": LabelProfile(column="price", task="regression")},  # no finite label: no statistics
        {"columns": [ColumnProfile("x", "double", 3, 1.0, "nan", "inf", ">10000", float("nan"))]},
        {"table": TableInfo(uri="/data/empty", version=None, rows=0, format="csv"), "warnings": ["", EVIL]},
    ],
)
def test_profile_report_renders_what_a_profile_may_hold(change: dict[str, Any]) -> None:
    doc = profile_html(replace(_empty_profile(), **change))
    checker = _check_document(doc)
    assert "Overview" in checker.headings
    assert EVIL not in doc


def test_profile_of_an_empty_table_has_no_columns_images_or_shares() -> None:
    doc = profile_html(_empty_profile())
    checker = _check_document(doc)
    assert checker.headings == [
        "Data profile: /data/empty",
        "Overview",
        "Splits",
        "Label balance",
        "Per split",
        "Duplicates and leakage",
        "Duplicate rows",
        "Leakage across splits",
        "Bad rows",
    ]
    assert "Columns" not in checker.headings and "Images" not in checker.headings
    assert "Missing values" not in checker.headings
    assert '<td class="num">0</td><td class="num">—</td>' in doc  # no share of no rows
    assert "the train split is empty" in doc


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
    assert "Baseline" not in checker.headings
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
    report = Evaluation(
        model={"name": "price-mlp", "version": "v2"},
        task="regression",
        split="",
        rows=50,
        skipped_rows=0,
        metrics={"test_rmse": 1.5, "test_r2": 0.93},
        scatter=[[float(i), float(i) + 0.5] for i in range(50)],
        worst=[WorstExample(key="row-1", label="10.0", prediction="55.0", confidence=0.5, thumbnail=None)],
    )
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
    "change",
    [
        {},
        {"model": None, "history": [], "worst": []},
        {"metrics": {"test_loss": float("nan"), "test_r2": float("-inf")}, "classes": ["a", "b"],
         "confusion_matrix": [[0, 0], [0, 0]], "per_class": {"a": ClassMetrics(0.0, 0.0, 0.0, 0.0)}},
        {"history": [{"epoch": 1.0, "train_loss": float("nan")}, {"train_loss": 0.5}],
         "scatter": [[1.0, float("nan")]]},
        {"worst": [WorstExample("k", "a", "b", 0.5, thumbnail="not base64 <b>")], "baseline": Baseline()},
    ],
)  # fmt: skip
def test_evaluation_report_renders_what_an_evaluation_may_hold(change: dict[str, Any]) -> None:
    report = Evaluation(task="classification", split="test", rows=0, skipped_rows=0, metrics={})
    checker = _check_document(evaluation_html(replace(report, **change)))
    assert "Summary" in checker.headings
    assert "Baseline" not in checker.headings  # no baseline was asked for


def test_evaluation_of_no_rows_has_only_a_summary() -> None:
    doc = evaluation_html(Evaluation(task="classification", split="test", rows=0, skipped_rows=4, metrics={}))
    checker = _check_document(doc)
    assert checker.headings == ["Model evaluation on test", "Summary"]
    assert "classification" in doc


def test_tune_report_draws_history_curves_importances_and_parallel_axes() -> None:
    from lakenet.reports import tune_html

    trials = [
        _trial(0, "complete", 0.80, params={"lr": 0.01, "width": 32}, intermediate={1: 0.5, 2: 0.7, 3: 0.8},
               epochs=3, seconds=1.0),
        _trial(1, "pruned", params={"lr": 0.0001, "width": 64}, intermediate={1: 0.2}, epochs=1,
               reason="pruned after epoch 1"),
        _trial(2, "complete", 0.90, params={"lr": 0.05, "width": 64}, intermediate={1: 0.6, 2: 0.8, 3: 0.9}, epochs=3),
        _trial(3, "failed", params={"lr": 0.3, "width": 32}, reason="<non-finite> loss"),
    ]  # fmt: skip
    summary = _summary(
        trials,
        study="wine-abc",
        metric="val_accuracy",
        counts={"complete": 2, "pruned": 1, "failed": 1},
        importances={"lr": 0.8, "width": 0.2},
        importance_note=None,
        space={"lr": {"log_uniform": [1e-4, 0.3]}, "width": {"choice": [32, 64]}},
    )
    html = tune_html(summary)
    for heading in ("Optimisation history", "Parameter importances", "Parallel coordinates", "Trials"):
        assert f"<h2>{heading}</h2>" in html
    assert "pruned (last reported value)" in html and "best so far" in html
    assert html.count("<svg") == 4  # history, per-epoch curves, importances, parallel coordinates
    assert "&lt;non-finite&gt; loss" in html  # reasons are escaped
    # a study with nothing finished yet still renders
    empty = tune_html(_summary([], importance_note="need 3 complete trials"))
    assert "no trial reported a value yet" in empty and "need 3 complete trials" in empty


def test_missing_values_and_the_baseline_are_reported() -> None:
    from lakenet.reports import evaluation_html, profile_html

    html = evaluation_html(
        Evaluation(
            task="classification",
            split="test",
            rows=10,
            skipped_rows=0,
            metrics={"test_roc_auc": 0.91},
            baseline=Baseline(
                model="HistGradientBoostingClassifier",
                metrics={"roc_auc": 0.89},
                seconds=0.1,
                train_rows=8,
                headline="roc_auc",
                summary="The deep model wins <really>",
            ),
        )
    )
    assert "HistGradientBoostingClassifier" in html and "&lt;really&gt;" in html and "0.89" in html
    skipped = evaluation_html(
        Evaluation(task="classification", split="test", rows=10, skipped_rows=0, metrics={},
                   baseline=Baseline(skipped="features of type ['image'] have no gradient-boosting baseline"))
    )  # fmt: skip
    assert "<h2>Baseline</h2>" in skipped and "No baseline: features of type" in skipped
    profile = profile_html(
        replace(
            _empty_profile(),
            missing={"amount": MissingProfile(column="amount", missing=3, rate=0.02, rule="impute",
                                              action="filled: median")},
            unlabelled=Unlabelled(total=2, by_split={"train": 2}),
        )
    )  # fmt: skip
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
    trials = [_trial(i, "complete", 1.0 / (i + 1), params={"x": i}, intermediate={1: 1.0}) for i in range(3)]
    summary = _summary(trials, direction="minimize", space={"x": {"int_uniform": [0, 9]}})
    assert tune_html(summary) == tune_html(summary)


def test_tune_history_marks_pruned_trials_and_the_best_so_far() -> None:
    from lakenet.reports.tune import _history_figure

    trials = [
        _trial(0, "complete", 0.5),
        _trial(1, "pruned", intermediate={1: 0.1, 2: 0.2}),
        _trial(2, "complete", 0.3),
        _trial(3, "failed"),
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


def test_tune_report_reads_the_summary_dataclasses() -> None:
    """The report takes lakenet.tuning.summary's dataclasses; tune.json is their to_dict()."""
    import json

    from lakenet.reports import tune_html

    trials = [
        _trial(0, "complete", 0.8, params={"lr": 0.1}, intermediate={1: 0.8}),
        _trial(1, "complete", 0.9, params={"lr": 0.01}, intermediate={1: 0.9}),
        _trial(2, "pruned", None, params={"lr": 0.3}, intermediate={1: 0.2}, reason="pruned <early>"),
    ]
    summary = _summary(trials, metric="acc", space={"lr": {"log_uniform": [1e-3, 1]}})
    html = tune_html(summary)
    assert "pruned &lt;early&gt;" in html and "needs at least 2 complete trials" not in html
    data = json.loads(json.dumps(summary.to_dict()))
    assert list(data) == [
        "study", "metric", "direction", "counts", "best_value", "best_trial", "best_params", "importances",
        "importance_note", "space", "trials",
    ]  # fmt: skip
    assert data["trials"][0] == {
        "number": 0, "state": "complete", "value": 0.8, "params": {"lr": 0.1}, "intermediate": {"1": 0.8},
        "epochs": None, "seconds": None, "reason": None, "start": None,
    }  # fmt: skip


def test_profile_to_dict_leaves_out_the_sections_it_lacks() -> None:
    full = _full_profile().to_dict()
    assert list(full) == [
        "table", "columns", "splits", "unlabelled", "missing", "label", "duplicates", "leakage", "bad_rows",
        "images", "warnings",
    ]  # fmt: skip
    assert full["label"] == {
        "column": "species",
        "task": "classification",
        "counts": {"cat": 7000, "dog": 5000, EVIL: 345},
        "by_split": {"train": {"cat": 5600, "dog": 4000}, "val": {"cat": 700, "dog": 500}, "test": {}},
    }
    assert full["leakage"] == {"rows": 2, "examples": [{"keys": ["k9", "k10"], "splits": ["train", "test"]}],
                               "sample_fraction": 1.0}  # fmt: skip
    assert full["bad_rows"]["examples"] == [
        {"key": "k42", "reason": "null label", "column": "species", "source": "part-0.parquet"}
    ]
    regression = replace(_empty_profile(), label=LabelProfile(column="y", task="regression")).to_dict()
    assert "images" not in regression and regression["label"] == {"column": "y", "task": "regression"}


def test_evaluation_to_dict_leaves_out_absent_sections_and_the_scores() -> None:
    from lakenet.evaluation.metrics import BinaryScores

    empty = Evaluation(task="regression", split="test", rows=0, skipped_rows=2, metrics={})
    assert empty.to_dict() == {"task": "regression", "split": "test", "rows": 0, "skipped_rows": 2, "metrics": {}}
    part = replace(empty, rows=3)
    report = replace(
        _full_evaluation(),
        scores=Scores(positive="dog", histogram=BinaryScores()),
        threshold=Threshold(positive="dog", value=0.4),
        parts={"new": part},
        baseline=Baseline(),
    )
    data = report.to_dict()
    assert list(data) == [
        "task", "split", "rows", "skipped_rows", "threshold", "classes", "confusion_matrix", "per_class", "worst",
        "metrics", "parts", "baseline", "history", "model",
    ]  # fmt: skip
    assert data["threshold"] == {"positive": "dog", "value": 0.4}
    assert data["parts"] == {"new": part.to_dict()} and data["baseline"] == {}
    assert data["per_class"]["cat"] == {"precision": 0.9074, "recall": 0.8333, "f1": 0.8688, "support": 600}
    assert data["worst"][1] == {"key": "k8", "label": EVIL, "prediction": "cat", "confidence": 0.9, "thumbnail": None}
    assert Baseline(skipped="why").to_dict() == {"skipped": "why"}


def test_templates_ship_with_the_package() -> None:
    from importlib.resources import files

    templates = files("lakenet.reports") / "templates"
    for name in ("base.html", "macros.html", "profile.html", "evaluation.html", "tune.html", "report.css"):
        assert (templates / name).is_file(), name


@pytest.mark.parametrize(
    "fixture", ["profile-digits", "profile-houses", "evaluation-digits", "evaluation-houses", "tune-wine"]
)
def test_summaries_read_back_from_their_json_write_it_byte_for_byte(fixture: str) -> None:
    """docs/screenshots/inputs holds real profile.json, evaluation.json and tune.json files: from_dict reads them
    back, to_dict writes exactly what was read (keys, order, values) and the report renders."""
    import json
    from pathlib import Path

    from lakenet.reports import tune_html

    path = Path(__file__).parents[2] / "docs" / "screenshots" / "inputs" / f"{fixture}.json"
    text = path.read_text()
    kind = fixture.split("-")[0]
    cls = {"profile": Profile, "evaluation": Evaluation, "tune": TuneSummary}[kind]
    summary = cls.from_dict(json.loads(text))
    assert json.dumps(summary.to_dict(), indent=2) == json.dumps(json.loads(text), indent=2)
    render = {"profile": profile_html, "evaluation": evaluation_html, "tune": tune_html}[kind]
    _check_document(render(summary))
