"""bench/report.py: every recorded row and ratio reaches the README, with its target."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.record import save
from bench.report import END, NAMES, START, main, ratios, render, replace_section

LEVELS = {
    str(c): {"rps": r, "p50": 10.0 + c, "p99": 20.0 + c, "errors": 0.0, "rounds": 2.0}
    for c, r in ((1, 60.0), (8, 90.0), (32, 120.0))
}


def figures() -> dict[str, dict]:
    return {
        "http_load": {
            "model": "e5-multi 9.9.9",
            "naive": "base model, untrained head",
            "rows": {
                "service c=1": {"rps": 60.0, "p50": 12.5, "p99": 30.0, "errors": 0},
                "service c=32": {
                    "rps": 110.0,
                    "p50": 200.0,
                    "p99": 400.0,
                    "errors": 0,
                    "loop_cpu_ms": 1.034,
                    "model_cpu_ms": 9.87,
                },
                "raw engine": {"rps": 150.0, "model_cpu_ms": 8.2},
                "naive c=32": {"rps": 20.0},
            },
            "ratios": {
                "service_vs_raw_c32": 0.75,
                "service_vs_naive_c32": 6.0,
                "resend_vs_one": 1.7,
                "batch_form_vs_singles": 1.3,
            },
            "resend": {"resend_ms": 17.0, "one_ms": 10.0},
            "batch_form": {"batch_msg_s": 130.0, "singles_msg_s": 100.0},
            "model_call_p50_ms": 11.0,
            "overhead_service_p50_ms": 12.4,
            "overhead_rounds": 4,
            "overhead_ms": 1.5,
        },
        "peers": {
            "rows": {
                "service": LEVELS,
                "optimum + pipeline": {
                    k: {**v, "rps": v["rps"] / 1.2, "cpu_ms": 16.25, "load_cpu_ms": 0.5}
                    for k, v in LEVELS.items()
                },
            }
        },
        "engine": {
            "model": "e5-multi",
            "pytorch": "base model, new head",
            "size_mb": 45.0,
            "load_s": 3.5,
            "rows": [{"engine": "int8", "batch": 1, "seq_s": 70.0}],
        },
    }


def test_every_target_is_judged_by_its_own_direction() -> None:
    got = {what: met for what, _, _, met in ratios(figures())}
    assert got["service / raw engine, c=32"] is False  # 0.75 < 0.80
    assert got["service / naive baseline, c=32"] is True
    assert got["20-message transcript re-sent with one new message / one message"] is False
    assert (
        got["overhead above the scoring core alone (batch 1), one-message transcript, c=1"] is True
    )  # 1.5 ms < 2
    assert got["service / optimum + pipeline, c=1 (msg/s)"] is True  # 1.2 >= 1.0
    assert got["service / optimum + pipeline, c=32 (msg/s)"] is False  # 1.2 < 1.5
    assert got["model load and first answer"] is False  # 3.5 s
    assert got["shipped model directory"] is True


def test_rendered_tables_name_what_is_missing_and_every_row() -> None:
    text = render(figures(), "2026-12-03")
    assert (
        "Not recorded in this run: engine_parallel, engine_cut, engine_fusions, loop_prepare, "
        "event_loop."
    ) in text
    assert "| naive c=32 | 20.0 |" in text
    # where the CPU went, per message, beside the raw engine's (blank where not measured)
    assert "| service c=32 | 110.0 | 200.0 | 400.0 | 0 | 1.03 | 9.87 |" in text
    assert "| raw engine | 150.0 |  |  | 0 |  | 8.20 |" in text
    assert "| service c=1 | 60.0 | 12.5 | 30.0 | 0 |  |  |" in text
    # the CPU per message at c=32 where the run measured it (the service row here did not)
    assert (
        "| optimum + pipeline | 50.0 (11.0 / 21.0) | 75.0 | 100.0 (42.0 / 52.0) | 16.25 + 0.50 |"
    ) in text
    assert "| service | 60.0 (11.0 / 21.0) | 90.0 | 120.0 (42.0 / 52.0) |  |" in text
    assert "taking turns in 2 alternating rounds at each level" in text
    assert "| service / raw engine, c=32 | 0.75 | ≥ 0.80 | **no** |" in text
    assert (
        "| overhead above the scoring core alone (batch 1), one-message transcript, c=1 | 1.50 ms "
        "(median of 4 alternating rounds; p50 12.40 against 11.00 ms) | < 2 ms | yes |"
    ) in text


def test_the_readme_section_is_replaced_between_its_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, data in figures().items():
        save(str(tmp_path / "rec"), name, data)
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nbefore\n{START}\nold figures\n{END}\nafter\n", encoding="utf-8")
    monkeypatch.setattr("sys.argv", ["report", str(tmp_path / "rec"), "--readme", str(readme)])
    main()
    text = readme.read_text(encoding="utf-8")
    assert "old figures" not in text and text.startswith("# t\n\nbefore\n" + START + "\n")
    assert text.endswith(END + "\nafter\n") and "| service c=1 | 60.0 | 12.5 | 30.0 | 0 |" in text
    assert set(NAMES) > set(figures())
    with pytest.raises(ValueError):
        replace_section("no markers here", "x")


def test_the_cut_is_judged_against_the_one_before_at_each_group_size() -> None:
    rows = [
        {"cut": "greedy (before)", "together": 8, "msg_s": 100.0},
        {"cut": "least cost (shipped)", "together": 8, "msg_s": 150.0},
        {"cut": "greedy (before)", "together": 32, "msg_s": 200.0},
        {"cut": "least cost (shipped)", "together": 32, "msg_s": 190.0},
        {"cut": "one window per call", "together": 1, "msg_s": 170.0},
    ]
    got = {w: (v, ok) for w, v, _, ok in ratios({"engine_cut": {"cores": 2, "rows": rows}})}
    assert got["least-cost cut / greedy cut, 8 windows together"] == ("1.50", True)
    assert got["least-cost cut / greedy cut, 32 windows together"] == ("0.95", False)
    assert len(got) == 2  # no sharing at all is shown, not judged (no target says how much)
    text = render({"engine_cut": {"cores": 2, "rows": rows}}, "2026-12-04")
    assert "| least cost (shipped) | 8 | 150.0 |" in text
    assert "| one window per call | 1 | 170.0 |" in text


def test_the_engine_session_is_judged_against_every_fusion_at_each_batch() -> None:
    rows = [
        {"session": "every fusion (onnxruntime's default)", "batch": 1, "ms": 9.0},
        {"session": "engine (SkipLayerNormFusion off)", "batch": 1, "ms": 8.0,
         "decisions_moved": 2, "decisions": 300},
        {"session": "every fusion (onnxruntime's default)", "batch": 8, "ms": 7.0},
        {"session": "engine (SkipLayerNormFusion off)", "batch": 8, "ms": 7.7,
         "decisions_moved": 0, "decisions": 300},
    ]  # fmt: skip
    fus = {"engine_fusions": {"windows": 100, "rows": rows}}
    got = {w: (v, ok) for w, v, _, ok in ratios(fus)}
    key = "engine session / onnxruntime's every fusion, {} per call"
    assert got[key.format("one window")] == ("1.12", True)
    assert got[key.format("up to 8 windows")] == ("0.91", False)
    text = render(fus, "2026-12-06")
    assert "| engine (SkipLayerNormFusion off) | up to 1 | 8.00 | 2 of 300 |" in text
    assert "| every fusion (onnxruntime's default) | up to 8 | 7.00 |  |" in text


def test_the_event_loops_are_shown_round_by_round_with_their_loop_cpu() -> None:
    def rounds(*rps: float) -> list[dict[str, float]]:
        return [{"rps": x, "p50": 10.0, "loop_cpu_ms": 1.0 + i / 10, "model_cpu_ms": 8.0}
                for i, x in enumerate(rps)]  # fmt: skip

    ev = {"rows": {"uvloop": {"32": rounds(200.0, 210.0), "1": rounds(90.0, 95.0)},
                   "asyncio": {"32": rounds(190.0, 195.0), "1": rounds(88.0, 91.0)}}}  # fmt: skip
    text = render({"event_loop": ev}, "2026-12-07")
    assert "| uvloop | 200.0 / 210.0 | 1.05 | 90.0 / 95.0 | 1.05 |" in text
    assert "| asyncio | 190.0 / 195.0 | 1.05 | 88.0 / 91.0 | 1.05 |" in text


def test_the_header_names_the_cpu_and_its_int8_instructions() -> None:
    from bench.report import cpu_model

    vnni = "model name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"
    avx2 = "model name\t: AMD EPYC\nflags\t\t: fpu avx avx2\n"
    assert cpu_model(vnni) == "Intel Xeon, AVX-512 VNNI"
    assert cpu_model(avx2) == "AMD EPYC, AVX2, no AVX-512 VNNI"
    assert cpu_model() in render({}, "2026-12-07")
