import xml.etree.ElementTree as ET

import pytest

from harness.report import markdown_table, splice, svg_grouped_bars

SVG = "{http://www.w3.org/2000/svg}"


def test_markdown_table_aligns_and_escapes():
    table = markdown_table(["name", "value"], [["a|b", 1], ["c\nd", 2.5]], "lr")
    assert table.splitlines() == [
        "| name | value |",
        "|:---|---:|",
        "| a\\|b | 1 |",
        "| c d | 2.5 |",
    ]


def test_markdown_table_rejects_ragged_rows_and_bad_alignment():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        markdown_table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="`align` has 1 letters"):
        markdown_table(["a", "b"], [], "l")


def test_splice_replaces_between_markers_and_keeps_the_rest():
    doc = "intro\n<!-- bench:x:start -->\nold\n<!-- bench:x:end -->\noutro\n"
    out = splice(doc, "x", "new\ntable")
    assert out == "intro\n<!-- bench:x:start -->\nnew\ntable\n<!-- bench:x:end -->\noutro\n"
    assert splice(out, "x", "new\ntable") == out


def test_splice_appends_a_missing_section():
    out = splice("# Title\n", "y", "body")
    assert out == "# Title\n\n<!-- bench:y:start -->\nbody\n<!-- bench:y:end -->\n"


def test_splice_leaves_backslashes_in_content_alone():
    out = splice("<!-- bench:z:start --><!-- bench:z:end -->", "z", r"a\1b \\ c")
    assert r"a\1b \\ c" in out


def test_chart_is_valid_svg_with_one_bar_per_value():
    svg = svg_grouped_bars(
        "Speed", "evaluations/s",
        [("uncached", [("DSPy", 300.0, None), ("promptopt", 20000.0, None)]),
         ("cached", [("DSPy", 1100.0, 50.0), ("promptopt", 60000.0, None)])],
        log=True,
    )
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    bars = [r for r in root.iter(SVG + "rect") if r.find(SVG + "title") is not None]
    assert len(bars) == 4
    widths = [float(r.get("width")) for r in bars]
    # Log scale: the larger value has the longer bar within each group.
    assert widths[1] > widths[0] and widths[3] > widths[2]
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "Speed" in texts and "DSPy" in texts and "promptopt" in texts
    assert "evaluations/s (log scale)" in texts
    # One whisker for the one bar with an error.
    assert len(list(root.iter(SVG + "line"))) > 1


def test_linear_chart_bar_lengths_are_proportional():
    svg = svg_grouped_bars("T", "s", [("g", [("a", 10.0, None), ("b", 20.0, None)])])
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(SVG + "rect") if r.find(SVG + "title") is not None]
    a, b = (float(r.get("width")) for r in bars)
    assert b == pytest.approx(2 * a, rel=0.01)


def test_chart_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        svg_grouped_bars("T", "u", [("g", [("a", 0.0, None)])], log=True)
    with pytest.raises(ValueError, match="at least one bar"):
        svg_grouped_bars("T", "u", [])


def test_chart_escapes_labels():
    svg = svg_grouped_bars("a < b & c", "u", [("<g>", [("x&y", 1.0, None)])])
    ET.fromstring(svg)
    assert "a &lt; b &amp; c" in svg
