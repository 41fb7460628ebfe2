"""Markdown tables (deeprepair.tables): the one writer of the reports' tables."""

from deeprepair.tables import markdown_table


def test_figures_are_right_aligned_and_cells_written_as_text():
    md = markdown_table(["method", "De (%)", "seeds"], [["finetune", "52.45 ± 0.59", 3], ["augmix", "-", 1]])
    assert md.splitlines() == ["| method | De (%) | seeds |", "|---|---:|---:|",
                               "| finetune | 52.45 ± 0.59 | 3 |", "| augmix | - | 1 |"]
    assert not md.endswith("\n")


def test_plain_alignment_and_no_rows():
    assert markdown_table(["a", "b"], [], numbers=False) == "| a | b |\n|---|---|"
