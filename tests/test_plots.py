"""The book's face: figures from frames, and DataFrames as readers see them."""

import matplotlib
import pandas as pd
import pytest

from vqdbook import plots

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def _variant_frame():
    # the shape of experiments.variant_frame: two cells, two variants, one record missing
    return pd.DataFrame([
        {"method": "pRD", "s": 2, "k": 2, "ε (paper units)": 0.16, "paper (%)": 92.26, "protocol": 54.4,
         "whitebox": None},
        {"method": "swRD", "s": 2, "k": 2, "ε (paper units)": 0.32, "paper (%)": 95.59, "protocol": 93.0,
         "whitebox": 12.6},
    ])


def test_variant_plot_one_panel_per_variant_counts_cells_within_tolerance():
    fig = plots.variant_plot(_variant_frame(), title="study")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["protocol\n1 of 2 cells within 5 points", "whitebox\n0 of 1 cells within 5 points"]
    assert fig._suptitle.get_text() == "study"


def test_table_curves_plot_one_panel_per_row():
    frame = pd.DataFrame([
        {"dataset": "mnist", "method": m, "s": None, "k": None, "label": m, "eps": e, "eps_paper": e,
         "accuracy": a, "ci_lo": a - 0.01, "ci_hi": a + 0.01, "paper": p}
        for m, a, p in (("no defense", 0.5, float("nan")), ("swRD (s=2, k=2)", 0.9, 0.95)) for e in (0.0, 0.32)])
    frame.attrs["n"] = 100
    fig = plots.table_curves_plot(frame, "Table 1")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["no defense", "swRD (s=2, k=2)"]


def test_frame_view_hides_the_index_and_keeps_long_text():
    long = "white-box: PGD through f∘Q with BPDA and EOT, a sentence longer than pandas' 50 characters"
    frame = pd.DataFrame({"variant": ["whitebox", "protocol"], "what changes": [long, "nothing"],
                          "gap": [-60.54321, float("nan")], "s": pd.array([2, None], dtype="Int64")})
    html = plots.frame_view(frame).to_html()
    assert long in html and "..." not in html
    assert "row_heading" not in html          # no 0..n index column
    assert ">-60.5432<" in html and ">nan<" not in html.lower() and "&lt;NA&gt;" not in html
    assert ">-60.5<" in plots.frame_view(frame, precision=1).to_html()
