"""The model card: README.md of a model directory, written from its config and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _table(rep: dict[str, Any]) -> list[str]:
    rows = ["| label | precision | recall | F1 | PR-AUC | support |", "|---|---|---|---|---|---|"]
    for lab, m in rep["labels"].items():
        auc = f"{m['pr_auc']:.3f}" if "pr_auc" in m else "n/a"
        rows.append(
            f"| {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
            f"{auc} | {int(m['support'])} |"
        )
    rows.append(f"| **macro** | | | **{rep['macro_f1']:.3f}** | | {rep['n']} items |")
    return rows


def _languages(metrics: dict[str, Any]) -> list[str]:
    rows = [
        "| language | items | macro-F1 | "
        + " | ".join(f"{lab} F1" for lab in metrics["test"]["labels"])
        + " |"
    ]
    rows.append("|---" * (3 + len(metrics["test"]["labels"])) + "|")
    for lang, rep in metrics.get("test_by_language", {}).items():
        rows.append(
            f"| {lang} | {rep['n']} | {rep['macro_f1']:.3f} | "
            + " | ".join(f"{m['f1']:.3f}" for m in rep["labels"].values())
            + " |"
        )
    return rows


def _comparison(metrics: dict[str, Any], name: str) -> list[str]:
    models = {name: metrics, **metrics.get("comparison", {})}
    langs = list(metrics.get("test_by_language", {}))
    rows = [
        "| model | overall macro-F1 | " + " | ".join(langs) + " |",
        "|---" * (2 + len(langs)) + "|",
    ]
    for title, m in models.items():
        per = m.get("test_by_language", {})
        cells = [f"{per[lg]['macro_f1']:.3f}" if lg in per else "n/a" for lg in langs]
        rows.append(f"| {title} | {m['test']['macro_f1']:.3f} | " + " | ".join(cells) + " |")
    return rows


def _interval(r: dict[str, Any], key: str = "macro_f1_interval") -> str:
    """ " [lo, hi]" after a macro-F1 that has its bootstrap interval, else nothing."""
    if key not in r:
        return ""
    lo, hi = r[key]
    return f" [{lo:.2f}, {hi:.2f}]"


def _real_test(metrics: dict[str, Any]) -> list[str]:
    """The held-out real text (the test that decides which model ships), beside the authored."""
    real = metrics.get("real_test")
    if not real:
        return []
    labels = list(real["f1"])
    rows = [
        "## Real-text test (held-out real third-party text; decides which model ships)",
        "",
        "The `real_test` split of the data card: real chat, sentences, tweets, jokes, quotes,",
        "scripture and speeches, uniform random and grouped, never trained or tuned on.",
        "`fpr_unlabelled` is the share of not-sensitive items that get any flag. In brackets:",
        "the 95% interval of macro-F1 from 1,000 group bootstrap draws (whole conversations or",
        "documents drawn with replacement; for a slice, of its macro-F1 over the labels present,",
        "the figure a language's support is judged on); a slice with few positives has a wide one.",
        "",
        "| split | items | macro-F1 | "
        + " | ".join(f"{lab} F1" for lab in labels)
        + " | fpr_unlabelled | ECE |",
        "|---" * (5 + len(labels)) + "|",
        f"| authored test | {metrics['test']['n']} | {metrics['test']['macro_f1']:.3f} | "
        + " | ".join(f"{metrics['test']['labels'][lab]['f1']:.3f}" for lab in labels)
        + f" | n/a | {metrics['test']['ece']:.3f} |",
        f"| real test | {real['n']} | {real['macro_f1']:.3f}{_interval(real)} | "
        + " | ".join(f"{real['f1'][lab]:.3f}" for lab in labels)
        + f" | {real['fpr_unlabelled']:.3f} | {real['ece']:.3f} |",
    ]
    if whole := real.get("transcripts"):
        rows.append(
            f"| real test chat, whole conversations | {whole['n']} | "
            f"{whole['macro_f1']:.3f}{_interval(whole)} | "
            + " | ".join(f"{whole['f1'][lab]:.3f}" for lab in labels)
            + f" | {whole['fpr_unlabelled']:.3f} | n/a |"
        )
        rows += [
            "",
            "A whole conversation is judged as `/v1/screen` decides for a signal given without",
            "source messages: it carries the union of its messages' labels, and is flagged on a",
            "label when any of its messages is.",
        ]
    rows += [
        "",
        "| real test slice | items | positives (h/r/p) | macro-F1 | macro-F1, labels present "
        "| fpr_unlabelled |",
        "|---|---|---|---|---|---|",
    ]
    slices = {"model's languages": real["model_languages"]}
    slices.update({f"language {k}": v for k, v in real["per_language"].items()})
    slices.update({f"source {k}": v for k, v in real["per_source"].items()})
    for name, r in slices.items():
        pos = "/".join(str(r.get("positives", {}).get(lab, "?")) for lab in labels)
        present = r.get("macro_f1_present", r["macro_f1"])
        rows.append(
            f"| {name} | {r['n']} | {pos} | {r['macro_f1']:.3f} "
            f"| {present:.3f}{_interval(r, 'macro_f1_present_interval')} "
            f"| {r['fpr_unlabelled']:.3f} |"
        )
    return [*rows, ""]


def _real_check(metrics: dict[str, Any]) -> list[str]:
    """The real check beside the real test: health keyword hits in the real test's groups of
    the supported languages, where the uniform test holds few health positives."""
    check = metrics.get("real_check")
    if not check:
        return []
    langs = sorted(check["per_language"])
    uniform = (metrics.get("real_test") or {}).get("per_language", {})
    held = ", ".join(
        f"{lang} {uniform[lang].get('positives', {}).get('health', '?')}"
        for lang in langs
        if lang in uniform
    )
    rows = [
        "### Real check (health in the supported languages; not part of the real test)",
        "",
        "The `real_check` split of the data card: items of the real test's groups (Bible books,",
        f"Hafez poems) in {', '.join(langs)} that hold a health keyword of their own language,",
        "drawn at random among the hits and labelled twice before any model scored them: real",
        "health talk, figurative pain and healing, and keyword hits about something else.",
        f"Health positives in the uniform real test, per language: {held}; so its per-language",
        "figures cannot say how health is judged there, and this can (on harder items than a",
        "uniform draw: every one holds a health word). Per label with positives: precision,",
        "recall, F1, and the share of the items without the label that get it.",
        "",
        "| slice | items | label | positives | precision | recall | F1 | flagged without it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    slices = {"all": check, **{f"language {k}": v for k, v in check["per_language"].items()}}
    for name, r in slices.items():
        for lab, m in r["labels"].items():
            rows.append(
                f"| {name} | {r['n']} | {lab} | {m['positives']} | {m['precision']:.3f} "
                f"| {m['recall']:.3f} | {m['f1']:.3f} | {m['false_flag_rate']:.3f} |"
            )
    return [*rows, ""]


def _ablations(metrics: dict[str, Any]) -> list[str]:
    """What each training choice was worth on real validation (and where measured, on the
    real test), run by run, with what was kept."""
    table = metrics.get("ablations")
    if not table:
        return []
    rows = [
        "## What each choice was worth (real validation macro-F1; real test where measured)",
        "",
        str(table.get("intro", "")),
        "",
        "| run / choice | real validation | real test | fpr_unlabelled (real test) | kept? "
        "| note |",
        "|---|---|---|---|---|---|",
    ]

    def cell(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else ("n/a" if x is None else str(x))

    for r in table["rows"]:
        rows.append(
            f"| {r['choice']} | {cell(r.get('real_validation'))} | {cell(r.get('real_test'))} "
            f"| {cell(r.get('fpr_unlabelled'))} | {r.get('kept', '')} | {r.get('note', '')} |"
        )
    not_tried = table.get("not_tried") or []
    if not_tried:
        rows += ["", "Not tried yet: " + "; ".join(not_tried) + "."]
    return [*rows, ""]


def _reading(config: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """How the model reads a transcript, how its scores are calibrated, where it is supported."""
    out = ["## How it reads a transcript, calibration, supported languages", ""]
    turns = int(config.get("context_turns", 0))
    if turns:
        out.append(
            f"- Each message is read after the {turns} turns before it, as `role: text` (each "
            f"cut to {config['context_chars'] // turns} characters; the most recent tokens kept "
            f"within {config['max_length']} tokens)."
        )
    elif config.get("context_chars"):
        out.append(
            f"- Each message is read after the last {config['context_chars']} characters of the "
            "message before it."
        )
    cal = (config.get("calibration") or {}).get("temperature")
    if cal:
        temps = ", ".join(f"{k} {v:.2f}" for k, v in cal.items())
        ece = (metrics.get("real_test") or {}).get("ece")
        out.append(
            f"- Scores are calibrated with one temperature per label ({temps}), fitted on "
            f"{config['calibration'].get('fitted_on', 'validation')}"
            + (f"; expected calibration error on the real test: {ece:.3f}." if ece else ".")
        )
    if "supported_languages" in config:
        listed = ", ".join(config["supported_languages"]) or "none"
        out.append(
            f"- Supported languages ({config.get('supported_languages_rule', '')}): {listed}. "
            "The service blocks signals from other languages unless told to score them "
            "(`ST_UNSUPPORTED_LANGUAGE=score`)."
        )
    return [*out, ""]


def _rewrites(config: dict[str, Any]) -> list[str]:
    """Exact graph rewrites made after the export (`training.graph`), scores unchanged."""
    done = {k: v for k, v in (config.get("graph_rewrites") or {}).items() if v}
    if not done:
        return []
    listed = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in done.items())
    return [f"- Graph rewritten exactly (`training.graph`, same scores): {listed}."]


def _runtime(metrics: dict[str, Any]) -> list[str]:
    """The runtime the figures hold for (another one rounds int8 a little differently)."""
    r = metrics.get("runtime")
    if not r:
        return []
    off = ", ".join(f"`{f}`" for f in r["fusions_off"]) or "none"
    return [
        f"- Figures scored with onnxruntime {r['onnxruntime']} as the service runs the graph "
        f"(every graph optimisation; fusions turned off: {off})."
    ]


def write_card(out: Path, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Write README.md into the model directory."""
    labels = config["labels"]
    chosen_on = config.get("thresholds_chosen_on", "validation").split(",")[0]
    lines = [
        f"# {config['name']} {config['version']}",
        "",
        "Multi-label classifier: does a chat message reveal **"
        + "**, **".join(labels)
        + "**? One sigmoid per label; a label is flagged when its score reaches the label's",
        "threshold. Labels follow the project's [labelling guide](../../docs/labeling-guide.md).",
        "",
        "## What it is",
        f"- Base model: `{config['base_model']}`, fine-tuned with mean pooling and a linear head.",
        f"- Languages it was trained and tested on: {', '.join(config['languages'])}.",
        f"- Max length {config['max_length']} tokens; longer texts are scored in overlapping "
        "windows by the service, which keeps the highest window score.",
        f"- Weights: {config['quantization']}, `model.onnx`; tokenizer `tokenizer.json`.",
        *_rewrites(config),
        f"- Data hash `{config['data_hash']}`, code version `{config['code_version']}`.",
        *_runtime(metrics),
        "",
        "## Thresholds",
        f"Chosen on the {chosen_on} split: best F1 while keeping recall >= "
        f"{config['training']['min_recall']:.2f} where possible"
        + (
            f" and flagging at most {bound:.1%} of the split's items with no label"
            if (bound := config["training"].get("max_false_flags", 1.0)) < 1.0
            else ""
        )
        + (
            ", from the scores of the shipped int8 model (through the service's core)."
            if config.get("thresholds_chosen_on")
            else "."
        ),
        "",
        "| label | threshold |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in config["thresholds"].items()],
        "",
        "## Test metrics (the shipped int8 model, through the service's scoring core)",
        "",
        *_table(metrics["test"]),
        "",
        "### Per language",
        "",
        *_languages(metrics),
        "",
        "### Side by side on the same test split",
        "",
        *_comparison(metrics, f"{config['name']} (this model)"),
        "",
        "### Calibration",
        f"Expected calibration error (10 bins, all label decisions): {metrics['test']['ece']:.4f}."
        " Reliability diagram: `reliability.png`; PR curves per label: `pr_curves.png`.",
        "",
    ]
    lines += _real_test(metrics)
    lines += _real_check(metrics)
    lines += _reading(config, metrics)
    lines += _ablations(metrics)
    if metrics.get("robustness"):
        lines += [
            "### Robustness (test split perturbed; scored through the service's normalisation)",
            "",
            "| perturbation | clean macro-F1 | perturbed macro-F1 | drop |",
            "|---|---|---|---|",
        ]
        for name, r in metrics["robustness"].items():
            lines.append(
                f"| {name} | {r['clean_macro_f1']:.3f} | {r['perturbed_macro_f1']:.3f} "
                f"| {r['drop']:+.3f} |"
            )
        lines.append("")
    trim = metrics.get("vocabulary_trimming") or {}
    if trim:
        deltas = ", ".join(
            f"{k} {v:+.3f}" for k, v in trim["by_language_after_minus_before"].items()
        )
        lines += [
            "### Vocabulary trimming (PyTorch, test split, same thresholds)",
            f"- Tokens: {trim['tokens_before']:,} -> {trim['tokens_after']:,}; test items "
            f"tokenized exactly as before: {trim['test_items_tokenized_identically']:.1%} (their "
            f"logits differ by at most {trim['max_logit_diff_on_identical']:.1e}).",
            f"- Macro-F1 before {trim['macro_f1_before']:.4f}, after {trim['macro_f1_after']:.4f}."
            f" Per language, after minus before: {deltas}.",
            "",
        ]
    ex = metrics["export"]
    lines += [
        "## Export checks",
        "- fp32 ONNX vs PyTorch, largest logit difference: "
        f"{ex['max_logit_diff_fp32_vs_pytorch']:.2e} (limit 1e-3).",
        f"- int8 vs fp32, test items with identical decisions: "
        f"{ex['int8_fp32_decision_agreement']:.4f} at the PyTorch thresholds (export limit "
        f"{config['training'].get('min_int8_agreement', 0.99):.2f}); macro-F1 int8 "
        f"{ex['int8_macro_f1']:.4f} vs fp32 {ex['fp32_macro_f1']:.4f}.",
        *(
            [
                f"- Activation smoothing before int8: {sm['inputs_smoothed']} of {sm['inputs']} "
                f"MatMul inputs smoothed (calibrated on {sm['calibration']}); simulated int8 "
                f"error {sm['simulated_int8_error_before']:.4f}"
                f" -> {sm['simulated_int8_error_after']:.4f}; smoothed fp32 vs fp32 largest logit "
                f"difference {sm['max_logit_diff_smoothed_fp32_vs_fp32']:.1e}."
            ]
            if (sm := ex.get("smoothing"))
            else []
        ),
        f"- Size on disk: {ex['size_bytes'] / 1e6:.1f} MB.",
        "",
        "## Limits",
        "- Test data come from the same sources as training data (see `training/data/README.md`);",
        "  expect lower scores on real conversations in other styles.",
        f"- {config['training'].get('notes', '')}",
        "- Licences: the weights were fine-tuned on third-party text under several licences,",
        "  some copyleft (GPL, AGPL) or asking not to be republished commercially; the data",
        '  card\'s "What these licences mean for the shipped model" says what that implies.',
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
