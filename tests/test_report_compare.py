"""ofg.report.compare: two claims tables matched row by row, verdicts compared."""

from __future__ import annotations

import math

import pandas as pd

from ofg.report.compare import compare_claims, main, read_claims


def _table(rows: list[dict]) -> pd.DataFrame:
    base = {"dataset": "embedded-brain", "model": "voxelmorph", "comparator": "unsupervised", "metric": "dice_mean",
            "note": "", "ci_low": -0.01, "ci_high": 0.01, "p": 0.5}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_rows_match_on_their_key_and_changed_verdicts_are_flagged(tmp_path):
    first = _table([{"claim": "dice_gain", "effect": -0.04, "ci_low": -0.06, "ci_high": -0.02, "verdict": "contradicted"},
                    {"claim": "best_steps", "comparator": "k=1", "note": "k=5 vs 1", "effect": 0.01,
                     "verdict": "inconclusive"},
                    {"claim": "best_steps", "comparator": "k=1", "note": "k=10 vs 1", "effect": 0.02,
                     "verdict": "supported"}])
    second = _table([{"claim": "best_steps", "comparator": "k=1", "note": "k=10 vs 1", "effect": 0.02,
                      "verdict": "supported"},
                     {"claim": "dice_gain", "effect": -0.01, "verdict": "inconclusive"},
                     {"claim": "dice_gain", "model": "lkunet", "effect": 0.0, "verdict": "inconclusive"}])
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    first.to_csv(paths[0], index=False)
    second.to_csv(paths[1], index=False)
    table = compare_claims(read_claims(paths[0]), read_claims(paths[1]), ("bf16", "float32"))
    assert len(table) == 4  # three rows of the first table, one only in the second
    gain = table[(table.claim == "dice_gain") & (table.model == "voxelmorph")].iloc[0]
    assert gain["verdict bf16"] == "contradicted" and gain["verdict float32"] == "inconclusive" and gain["changed"]
    assert gain["CI bf16"] == "[-0.06, -0.02]" and math.isclose(gain["effect float32"], -0.01)
    ten = table[table.note == "k=10 vs 1"].iloc[0]
    assert not ten["changed"] and ten["verdict float32"] == "supported"
    five = table[table.note == "k=5 vs 1"].iloc[0]
    assert five["changed"] and five["verdict float32"] == "" and five["CI float32"] == "n/a"
    out = tmp_path / "cmp.md"
    assert main([str(paths[0]), str(paths[1]), "--labels", "bf16", "float32", "--out", str(out)]) == 0
    assert table["shared"].tolist() == [True, False, True, False]
    assert "1 of 2 verdicts of the rows both tables hold differ; 2 rows are in one table only." in out.read_text()


def test_a_file_that_is_not_a_claims_table_is_named(tmp_path, capsys):
    bad = tmp_path / "metrics.csv"
    pd.DataFrame({"dice": [0.5]}).to_csv(bad, index=False)
    assert main([str(bad), str(bad)]) == 2
    assert f"{bad}: not a claims table" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.csv"), str(bad)]) == 2
    assert "missing.csv: cannot read a claims table" in capsys.readouterr().err
