"""profiles/accuracy/ pinned against the source texts, and the recomputed summaries checked.

The paper's tables are parsed from its text (tests/fixtures/accuracy/paper-2505.02390v2.txt, the
HTML rendering flattened to lines) and cross-checked against its README's markdown tables; the
model-card figures from the reference markdown. Every stored value must equal the printed string.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest

from planner.core.accuracy import tables as acc
from planner.core import catalog
from planner.core.llamacpp.schemes import all_ids
from planner.errors import PlannerError

from accuracy_figures import ACCURACY, column, printed, rows, weighted

FIX = Path(__file__).parent / "fixtures" / "accuracy"
PAPER = (FIX / "paper-2505.02390v2.txt").read_text()
README = (FIX / "paper-readme.md").read_text()
REFERENCE = (FIX / "reference-accuracy.md").read_text()

ROW_IDS = {"AIME 2024": "aime2024", "MATH 500": "math500", "GPQA": "gpqa", "MBPP": "mbpp", "MBPP+": "mbpp_plus",
           "LiveCodeBench": "livecodebench", "MMLU": "mmlu", "CMMLU": "cmmlu", "C-Eval": "ceval",
           "Average": "average", "Weighted avg.": "weighted_avg", "Accuracy drop": "accuracy_drop"}
# header line of each table in the paper text
PAPER_HEADERS = {
    "paper-t2": "DeepSeek-R1 FP8(Reported)",
    "paper-t3": "DeepSeek-V3 FP8(Reported)",
    "paper-t4": "DeepSeek-V3 0324 FP8",
    "paper-t5": "DeepSeek-R1 distill-Qwen-32B",
}
TOKEN = re.compile(r"-|\d+(?:\.\d+)?%?(?:\(±?\d+\.\d+\))?")
CELL = re.compile(r"(\d+(?:\.\d+)?)%?(?:\(±?(\d+\.\d+)\))?")


def _columns(table: str) -> list[acc.Measurement]:
    return [m for m in acc.data().measurements if m.table == table]


def _paper_table(table: str) -> tuple[str, dict[str, list[str]]]:
    """(header line, row id -> printed tokens) of one table of the paper text."""
    lines = PAPER.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(PAPER_HEADERS[table]))
    rows: dict[str, list[str]] = {}
    for line in lines[i + 1:i + 13]:
        name = next(n for n in sorted(ROW_IDS, key=len, reverse=True) if line.startswith(n))
        rest = line[len(name):].replace("(±plus-or-minus\\pm±", "(±").strip()
        # one typesetting gap in the HTML: Table 4, C-Eval of Q3_K_M is printed "88 .90"
        rest = rest.replace("88 .90", "88.90")
        toks = TOKEN.findall(rest)
        assert "".join(toks) == rest.replace(" ", ""), f"unparsed text in {line!r}"
        rows[ROW_IDS[name]] = toks
    return lines[i], rows


def _split(tok: str) -> tuple[str, str]:
    m = CELL.fullmatch(tok)
    assert m, tok
    return m.group(1), m.group(2) or ""


@pytest.mark.parametrize("table", sorted(PAPER_HEADERS))
def test_paper_table_values_equal_the_paper_text(table):
    header, rows = _paper_table(table)
    cols = _columns(table)
    # the column labels, in order, are the paper's header (spacing and case aside)
    squash = lambda s: re.sub(r"\s+", "", s).lower()  # noqa: E731
    assert squash(header).endswith(squash("".join(m.column for m in cols)))
    n = len(cols)
    assert all(len(toks) == n for toks in rows.values())
    for j, m in enumerate(cols):
        for row, toks in rows.items():
            tok = toks[j]
            if tok == "-":
                assert row not in m.cells, (table, m.column, row)
                continue
            value, std = _split(tok)
            cell = m.cells[row]
            assert (cell.printed, cell.std_printed) == (value, std), (table, m.column, row)
            assert cell.source.startswith(f"arXiv 2505.02390 Table {table[-1]}")


def _readme_tables() -> list[list[list[str]]]:
    out, cur = [], []
    for line in README.splitlines():
        if line.startswith("|"):
            cur.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def _norm(s: str) -> str:
    """The README's typography: non-breaking hyphens and narrow no-break spaces."""
    return s.replace("\u2011", "-").replace("\u202f", " ").replace("\u00a0", " ")


@pytest.mark.parametrize("readme_index,table", [(1, "paper-t2"), (2, "paper-t3"), (3, "paper-t5")])
def test_paper_tables_equal_the_readme(readme_index, table):
    """The README prints the same tables as markdown (R1, V3, R1-Distill-Qwen-32B)."""
    md = _readme_tables()[readme_index]
    cols = _columns(table)
    header = [_norm(h) for h in md[0][1:]]
    assert [re.sub(r"\s+", "", h).lower() for h in header] == [
        re.sub(r"\s+", "", m.column).lower() for m in cols]
    for r in md[2:]:
        row = ROW_IDS[_norm(r[0]).strip("*")]
        for m, raw in zip(cols, r[1:]):
            raw = _norm(raw).replace(" ", "")
            if raw == "-":
                assert row not in m.cells
                continue
            value, std = _split(raw)
            assert (m.cells[row].printed, m.cells[row].std_printed) == (value, std), (table, m.column, row)


def test_table8_weights_and_counts():
    lines = PAPER.splitlines()
    i = lines.index("Benchmark Question Count Weight")
    got = {}
    for line in lines[i + 1:i + 10]:
        name, count, weight = re.fullmatch(r"(.+?) ?(\d+) (\d+(?:\.\d+)?)", line).groups()
        got[name] = (int(count), float(weight))
    bms = acc.data().benchmarks
    by_name = {b.name: b for b in bms.values() if b.weight is not None}
    assert {n: (b.questions, b.weight) for n, b in by_name.items()} == got
    assert acc.task_weights("general") == {b.id: b.weight for b in by_name.values()}
    assert sum(acc.task_weights("general").values()) == pytest.approx(5.7)


def test_table6_scores_are_the_weighted_averages():
    lines = PAPER.splitlines()
    for label, table in (("Avg. Score (V3)", "paper-t3"), ("Avg. Score (R1)", "paper-t2")):
        line = next(x for x in lines if x.startswith(label))
        toks = TOKEN.findall(line[len(label):])
        assert len(toks) == 5     # Table 6 columns: Q4_K_M Q3_K_M DQ3_K_M Q2_K_L UD-Q2_K_XL
        for scheme, tok in zip(("Q4_K_M", "Q3_K_M", "DQ3_K_M", "Q2_K_L", "UD-Q2_K_XL"), toks):
            m = acc.measurement_for(acc.data().tables[table].model, scheme)
            if tok == "-":
                assert m is None
            else:
                assert m.cells["weighted_avg"].printed == tok


def test_every_paper_cell_is_stored_and_nothing_else():
    stored = sum(len(m.cells) for t in PAPER_HEADERS for m in _columns(t))
    printed = sum(1 for t in PAPER_HEADERS for toks in _paper_table(t)[1].values() for x in toks if x != "-")
    assert stored == printed == 264


# ------------------------------------------------------------------------------ model cards

def _reference_rows() -> list[tuple[str, str, list[str]]]:
    out = []
    for line in REFERENCE.splitlines():
        if not line.startswith("| ") or line.startswith(("| Model", "| Benchmark", "|---")):
            continue
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) >= 5:
            out.append((c[0], c[1], c[2:]))
    return out


CARD_MODEL = {"Llama-8B": "deepseek-r1-distill-llama-8b", "Llama-70B": "deepseek-r1-distill-llama-70b",
              "Qwen-1.5B": "deepseek-r1-distill-qwen-1.5b", "Qwen-7B": "deepseek-r1-distill-qwen-7b",
              "Qwen-14B": "deepseek-r1-distill-qwen-14b", "Qwen-32B": "deepseek-r1-distill-qwen-32b"}
CARD_SCHEME = {"BF16": "BF16", "FP8-dynamic": "FP8-dynamic", "INT W8A8": "W8A8", "INT W4A16": "W4A16"}


def test_card_values_equal_the_reference():
    rows = _reference_rows()
    assert len(rows) == 16 + 12
    for model, fmt, cells in rows:
        mid, scheme = CARD_MODEL[model], CARD_SCHEME[fmt]
        suite = "reasoning" if len(cells) == 4 else "openllm"
        bench = (["aime2024", "math500", "gpqa", "average"] if suite == "reasoning" else
                 ["arc_challenge", "gsm8k", "hellaswag", "mmlu", "truthfulqa", "winogrande", "average"])
        m = next(x for x in _columns(f"card-{mid.removeprefix('deepseek-')}-{suite}") if x.scheme == scheme)
        assert list(m.cells) == bench
        for b, raw in zip(bench, cells):
            value = re.match(r"[\d.]+", raw).group()
            rec = re.search(r"\(([\d.]+)\)|card prints ([\d.]+)", raw)
            c = m.cells[b]
            assert c.printed == value, (model, fmt, b)
            assert c.recovery_printed == ((rec.group(1) or rec.group(2)) if rec else ""), (model, fmt, b)
            assert "RedHatAI/" in c.source and c.verified.startswith("unverified")


def test_r1_and_r1_0528_card_values_equal_the_reference():
    r1 = {m.scheme: m for m in _columns("card-r1-reasoning")}
    got = {b: (r1["BF16"].cells[b].printed, r1["W4A16"].cells[b].printed, r1["W4A16"].cells[b].recovery_printed)
           for b in ("aime2024", "math500", "gpqa", "average")}
    want = {}
    for label, b in (("AIME24", "aime2024"), ("MATH-500", "math500"), ("GPQA-D", "gpqa"),
                     ("Reasoning average", "average")):
        m = re.search(rf"\| {re.escape(label)} \| ([\d.]+) → ([\d.]+) \(([\d.]+)\) \|", REFERENCE)
        want[b] = m.groups()
    assert got == want
    openllm = {m.scheme: m.cells["average"] for m in _columns("card-r1-openllm")}
    assert (openllm["BF16"].printed, openllm["W4A16"].printed, openllm["W4A16"].recovery_printed) == \
        re.search(r"Open LLM V1 average \| ([\d.]+) → ([\d.]+) \(([\d.]+)\)", REFERENCE).groups()
    r0528 = {m.scheme: m for m in _columns("card-r1-0528-reasoning")}
    line = next(x for x in REFERENCE.splitlines() if x.startswith("AIME24 88.66"))
    pairs = re.findall(r"([\d.]+) → ([\d.]+)", line)
    assert [(r0528["FP8"].cells[b].printed, r0528["W4A16"].cells[b].printed)
            for b in ("aime2024", "math500", "gpqa", "average")] == pairs
    assert r0528["W4A16"].cells["average"].recovery_printed == re.search(r"\(([\d.]+)%\)", line).group(1)


# ------------------------------------------------------------------------------ recomputation

def test_recomputed_weighted_averages_match_the_paper_to_rounding():
    checked = 0
    for t in PAPER_HEADERS:
        for m in _columns(t):
            if m.weighted_avg is None:
                continue
            w = acc.recompute_weighted_avg(m)
            # inputs have 2 decimals (a few 1): the weighted mean moves at most 0.005, printing 0.005 more
            tol = sum(acc.task_weights()[b] * m.cells[b].half_ulp for b in m.scores) / 5.7 + 0.005
            assert abs(w - m.weighted_avg) <= tol + 1e-9, (t, m.column, w, m.weighted_avg)
            checked += 1
    assert checked == 21
    r1 = {m.scheme: m for m in _columns("paper-t2") if m.role != "reported"}
    for s in ("Q4_K_M", "DQ3_K_M", "FP8"):      # Table 8's weights over the file's per-benchmark values
        assert acc.recompute_weighted_avg(r1[s]) == pytest.approx(weighted("deepseek-r1", s, table="paper-t2"))


def test_recomputed_averages_match_except_v3_dq3():
    bad = []
    for t in PAPER_HEADERS:
        for m in _columns(t):
            if m.average is None:
                continue
            tol = sum(c.half_ulp for b, c in m.cells.items() if b in m.scores) / len(m.scores) + 0.005
            if abs(acc.recompute_average(m) - m.average) > tol + 1e-9:
                bad.append((t, m.scheme, round(acc.recompute_average(m), 3), m.average))
    assert bad == [("paper-t3", "DQ3_K_M", 70.494, 70.47)]


def test_findings_are_exactly_the_rows_that_do_not_add_up():
    got = {(f.table, f.column, f.row, f.printed, round(f.recomputed, 2)) for f in acc.check_all()}
    assert got == {
        ("paper-t3", "DQ3_K_M (ours)", "average", 70.47, 70.49),
        ("paper-t4", "Q2_K_L (llama.cpp)", "accuracy_drop", 14.66, 14.06),
        ("card-r1-distill-llama-8b-reasoning", "INT W8A8", "gpqa recovery", 98.25, 99.25),
        ("card-r1-distill-qwen-1.5b-reasoning", "INT W4A16", "average", 46.77, 47.77),
        ("card-r1-distill-qwen-1.5b-reasoning", "INT W4A16", "math500 recovery", 97.47, 101.02),
    }
    # each is flagged in the data, next to the value kept as printed
    notes = {(m.table, m.column): m for m in acc.data().measurements}
    assert "does not add up" in notes[("paper-t3", "DQ3_K_M (ours)")].cells["average"].note
    assert "does not add up" in notes[("paper-t4", "Q2_K_L (llama.cpp)")].cells["accuracy_drop"].note
    assert "does not add up" in notes[("card-r1-distill-llama-8b-reasoning", "INT W8A8")].cells["gpqa"].note
    assert "does not add up" in notes[("card-r1-distill-qwen-1.5b-reasoning", "INT W4A16")].cells["math500"].note


def test_drop_basis_is_weighted_in_tables_2_3_5_and_average_in_table_4():
    """The captions say 'average score'; the printed drops say otherwise for Tables 2, 3 and 5."""
    r1 = {m.scheme: m for m in _columns("paper-t2") if m.role != "reported"}
    assert acc.recompute_drop(r1["Q4_K_M"], "weighted_avg") == pytest.approx(0.676, abs=1e-3)
    assert acc.recompute_drop(r1["Q4_K_M"], "average") == pytest.approx(0.934, abs=1e-3)
    assert r1["Q4_K_M"].printed_drop == 0.68
    v0324 = {m.scheme: m for m in _columns("paper-t4")}
    assert acc.recompute_drop(v0324["Q3_K_M"], "average") == pytest.approx(1.852, abs=1e-3)
    assert acc.recompute_drop(v0324["Q3_K_M"], "weighted_avg") == pytest.approx(1.413, abs=1e-3)
    assert v0324["Q3_K_M"].printed_drop == 1.85
    assert [acc.data().tables[t].drop_basis for t in sorted(PAPER_HEADERS)] == [
        "weighted_avg", "weighted_avg", "average", "weighted_avg"]
    # schemes above their baseline print 0
    v3 = {m.scheme: m for m in _columns("paper-t3") if m.role != "reported"}
    assert acc.recompute_drop(v3["Q4_K_M"]) < 0 and v3["Q4_K_M"].printed_drop == 0


def test_card_recoveries_recompute():
    m = next(x for x in _columns("card-r1-distill-qwen-32b-reasoning") if x.scheme == "W4A16")
    base = acc.baseline_of(m)
    assert 100 * m.scores["aime2024"] / base.scores["aime2024"] == pytest.approx(98.68, abs=0.005)
    assert acc.recompute_drop(m) == pytest.approx(0.55)
    assert acc.recompute_average(m) == pytest.approx(75.877, abs=1e-3)


# ------------------------------------------------------------------------------ ids and API

def test_ids_are_catalog_and_scheme_ids():
    models = set(catalog.catalog())
    engine_formats = {p.stem for p in (Path(acc.profiles_dir()) / "formats").glob("*.toml")} or {
        "BF16", "FP8", "FP8-dynamic", "W8A8", "W4A16", "AWQ"}
    llama = set(all_ids())
    for m in acc.data().measurements:
        assert m.model in models, m.model
        assert m.scheme in llama | engine_formats | {"FP8", "Q4_K-full", "Q3_K-full"}, m.scheme
    # the paper's fully quantized Q4_K/Q3_K are not llama-quantize's Q4_K/Q3_K (= Q4_K_M/Q3_K_M)
    v0324 = {m.column: m.scheme for m in _columns("paper-t4")}
    assert v0324["Q4_K"] == "Q4_K-full" and v0324["Q3_K"] == "Q3_K-full"
    assert acc.accuracy_for("deepseek-v3-0324", "Q4_K") is None
    assert acc.accuracy_for("deepseek-v3-0324", "Q4_K-full").weighted_avg == printed("deepseek-v3-0324", "Q4_K-full")


def test_accuracy_for_r1_q4_k_m_is_the_papers():
    a = acc.accuracy_for("deepseek-r1", "Q4_K_M")
    col = column("deepseek-r1", "Q4_K_M", "paper-t2")
    assert (a.weighted_avg, a.average, a.drop_pct) == (col["weighted_avg"], col["average"], col["accuracy_drop"])
    assert a.task_score == col["weighted_avg"]           # general on all nine benchmarks: the printed figure
    assert a.baseline == "FP8 (Official API)"
    assert "Table 2" in a.source and "Q4_K_M (llama.cpp)" in a.source
    assert a.per_benchmark == {b: v for b, v in col.items() if b not in ("average", "weighted_avg", "accuracy_drop")}
    assert len(a.per_benchmark) == 9


def test_accuracy_for_baseline_and_reported_and_unmeasured():
    fp8 = acc.accuracy_for("deepseek-r1", "FP8")
    assert fp8.weighted_avg == printed("deepseek-r1", "FP8", table="paper-t2") and fp8.drop_pct is None
    assert "FP8 (Official API)" in fp8.source                             # the API column, not "Reported"
    bf16 = acc.accuracy_for("deepseek-r1-distill-qwen-32b", "BF16")
    assert bf16.weighted_avg == printed("deepseek-r1-distill-qwen-32b", "BF16", table="paper-t5")
    assert "Table 5" in bf16.source                                       # paper preferred over the card
    assert acc.accuracy_for("deepseek-r1", "Q2_K") is None
    assert acc.accuracy_for("deepseek-r1", "Q2_K_L") is None            # measured on V3, not R1
    assert acc.accuracy_for("deepseek-v2", "Q4_K_M") is None
    w4 = acc.accuracy_for("deepseek-r1", "W4A16")
    card = "card-r1-reasoning"
    assert w4.weighted_avg is None and w4.average == printed("deepseek-r1", "W4A16", "average", card)
    assert w4.drop_pct == pytest.approx(100 - 100 * w4.average / printed("deepseek-r1", "BF16", "average", card), abs=0.005)
    assert w4.baseline == "BF16"


def test_task_weights_and_scores():
    g = acc.task_weights("general")
    math_w = acc.task_weights("math")
    for b, w in g.items():
        assert math_w[b] == pytest.approx(w * (4 if b in ("aime2024", "math500", "gpqa") else 1))
    assert acc.task_weights("chinese")["ceval"] == 4 and acc.task_weights("chinese")["mmlu"] == 1
    dq3 = acc.measurement_for("deepseek-r1", "DQ3_K_M")
    s = dq3.scores
    want = (0.8 * s["aime2024"] + 2 * s["math500"] + 2 * s["gpqa"] + 0.5 * (s["mbpp"] + s["mbpp_plus"]
            + s["livecodebench"]) + s["mmlu"] + s["cmmlu"] + s["ceval"]) / 9.3
    assert acc.task_score(dq3, "math") == pytest.approx(want)
    card = acc.measurement_for("deepseek-r1-distill-qwen-32b", "W4A16")
    assert acc.task_score(card, "code") is None                       # no code benchmark on the card
    assert acc.task_score(card, "general") == pytest.approx(
        weighted("deepseek-r1-distill-qwen-32b", "W4A16", table="card-r1-distill-qwen-32b-reasoning"))
    with pytest.raises(PlannerError, match="unknown --task 'poetry'; valid: general, math, code, chinese"):
        acc.task_weights("poetry")


def test_models_with_accuracy():
    """The models (and R1's schemes) with a column that may rank: not "reported", in a suite of rank > 0
    (profiles/accuracy/tables.toml), read from the files themselves."""
    import tomllib

    toml = tomllib.loads((ACCURACY / "tables.toml").read_text())
    rank = {tid: toml["suites"][t["suite"]]["rank"] for tid, t in toml["tables"].items()}
    rankable = [r for r in rows() if r["role"] != "reported" and rank[r["table"]] > 0]
    assert set(acc.models_with_accuracy()) == {r["model"] for r in rankable}
    assert len(acc.models_with_accuracy()) >= 10
    r1 = sorted((r for r in rankable if r["model"] == "deepseek-r1"), key=lambda r: rank[r["table"]])
    assert acc.schemes_with_accuracy("deepseek-r1") == list(dict.fromkeys(r["scheme"] for r in r1))


def test_table_for_renders_printed_and_recomputed_rows():
    from planner.render.accuracy_tables import table_for

    views = table_for("deepseek-r1")
    assert [v.id for v in views] == ["paper-t2", "card-r1-reasoning", "card-r1-openllm"]
    t2 = views[0]
    rows = dict(t2.rows)
    assert t2.columns[1] == "FP8 (Official API)" and t2.schemes[1] == "FP8" and t2.roles[0] == "reported"
    assert rows["AIME 2024"] == ["79.8", "77.53 ±2.97", "75.43 ±3.07", "72.50 ±6.11", "75.83 ±5.83", "75.41 ±4.69"]
    assert rows["Weighted avg."][2] == "85.24"
    assert rows["Weighted, Table 8 (recomputed)"][2] == "85.24"
    assert rows["Drop % (recomputed)"][5] == "0.34"
    v3 = table_for("deepseek-v3")[0]
    assert any("70.47" in f for f in v3.findings)


def test_every_row_names_its_source():
    for path in sorted((Path(acc.profiles_dir()) / "accuracy").glob("scores-*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                assert row["source"] and row["table"] and row["verified"], row


def test_malformed_data_is_a_planner_error(tmp_path, monkeypatch):
    root = tmp_path / "profiles"
    shutil.copytree(Path(acc.profiles_dir()), root)
    p = root / "accuracy" / "scores-paper-2505.02390.csv"
    text = p.read_text().replace("paper-t2,deepseek-r1,Q4_K_M,Q4_K_M (llama.cpp),quantized,aime2024,75.43",
                                 "paper-t2,deepseek-r1,Q4_K_M,Q4_K_M (llama.cpp),quantized,aime2024,75.4x", 1)
    p.write_text(text)
    monkeypatch.setenv("DQ_PLANNER_PROFILES", str(root))
    with pytest.raises(PlannerError, match=r"scores-paper-2505.02390.csv:\d+: '75.4x' is not a number"):
        acc.data()
    p.write_text(text.replace("75.4x", "75.43").replace(",aime2024,79.8,", ",aime1999,79.8,"))
    with pytest.raises(PlannerError, match="unknown benchmark 'aime1999'"):
        acc.data()
