"""report.html: one self-contained page per run, summary first (images embedded, no scripts, no network).

Sections: verdict, metrics baseline vs tuned with 95% intervals and the paired test, their chart,
summary lengths (summarization runs), loss curves, forgetting, classification pictures and per-entity-type
scores where they apply, the data audit summary, sample outputs, the training summary, and the config and
manifest. `tuneloop report RUN_DIR` rebuilds it.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from tuneloop.report import plots
from tuneloop.workspace import RunDir, read_json, read_jsonl, write_text

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:66rem;color:#1d232b;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.1rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde2e8}
table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.3rem .65rem;border-bottom:1px solid #eef1f4;text-align:left;vertical-align:top}
th{color:#5b6673;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-weight:700;font-size:.8rem}
.passed{background:#e6f4ea;color:#137333}.failed{background:#fce8e6;color:#b42318}
.muted{color:#5b6673}.up{color:#137333}.down{color:#b42318}
.ex{font:13px ui-monospace,monospace;background:#f6f8fa;padding:.15rem .35rem;border-radius:4px;
white-space:pre-wrap;word-break:break-word;display:block}
table.samples td{width:25%}img{max-width:100%}details{margin:.4rem 0}summary{cursor:pointer;color:#1f5fae}
"""
HIDDEN_METRICS = ("validation_tokens",)
# Preference metrics that are not on a 0-100 scale: in the table, not in the percentage chart.
UNSCALED_METRICS = ("implicit_reward_margin", "reply_words", "reward_score", "kl_from_base", "reward_margin")


def write_report(run: RunDir) -> Path:
    path = run.root / "report.html"
    write_text(path, render_report(run))
    return path


def render_report(run: RunDir) -> str:
    metrics = read_json(run.metrics) if run.metrics.is_file() else {}
    config = run.config.read_text(encoding="utf-8") if run.config.is_file() else ""
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(run.root.name)} report</title>"
        f"<style>{STYLE}</style></head><body>",
        _header(run, metrics),
    ]
    if metrics:
        parts += [_metrics_table(metrics), _perplexity_sets(metrics), _metric_chart(metrics)]
    if metrics.get("lengths"):
        parts.append(_lengths(metrics["lengths"]))
    if metrics.get("rewards"):
        parts.append(_reward_functions(metrics))
    parts.append(_loss_section(run))
    if metrics.get("preference"):
        parts.append(_preference(metrics["preference"]))
    if metrics.get("safety"):
        parts.append(_safety(metrics["safety"]))
    if metrics.get("forgetting"):
        parts.append(_forgetting(metrics["forgetting"]))
    if metrics.get("drift") or metrics.get("guard"):
        parts.append(_drift_and_guard(metrics))
    if metrics.get("classification"):
        parts.append(_classification(metrics["classification"]))
    if metrics.get("token_classification"):
        parts.append(_entity_types(metrics["token_classification"]))
    parts.append(_audit(run))
    parts.append(_samples(run))
    parts.append(_training(run))
    parts.append(_defaults(run))
    parts.append(_few_shot(run))
    parts.append(f"<h2>Config and manifest</h2><details><summary>config.yaml</summary><pre class=ex>{escape(config)}"
                 f"</pre></details>")
    if run.manifest.is_file():
        manifest = json.dumps(read_json(run.manifest), indent=2)
        parts.append(f"<details><summary>manifest.json</summary><pre class=ex>{escape(manifest)}</pre></details>")
    parts.append("</body></html>")
    return "".join(parts)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _header(run: RunDir, metrics: dict) -> str:
    summary = read_json(run.root / "train_summary.json") if (run.root / "train_summary.json").is_file() else {}
    status = metrics.get("status", "passed" if metrics else "not evaluated")
    badge = f"<span class='badge {escape(status)}'>{escape(status)}</span>" if metrics else ""
    lines = [f"<h1>{escape(run.root.name)} {badge}</h1>"]
    described = []
    if summary:
        described.append(f"{summary.get('method')} fine-tune, {summary.get('steps')} steps in "
                         f"{summary.get('seconds')} s on {summary.get('device')} ({summary.get('compute_dtype')})")
        if summary.get("trainable_parameters") is not None:
            described.append(f"{summary['trainable_parameters']:,} trainable parameters"
                             + (f", peak memory {summary['peak_memory_mb']:,.0f} MB"
                                if summary.get("peak_memory_mb") else ""))
    if metrics.get("heldout"):
        described.append(f"held-out: {metrics['heldout']['rows']} rows ({escape(str(metrics['heldout']['split']))})")
    lines.append(f"<p class=muted>{'; '.join(described)}</p>")
    for failure in metrics.get("failures", []):
        lines.append(f"<p class=down>{escape(failure)}</p>")
    headline = _headline(metrics)
    if headline:
        lines.append(f"<p><b>{escape(headline)}</b></p>")
    return "".join(lines)


def _headline(metrics: dict) -> str:
    if "domain_perplexity" in metrics.get("baseline", {}):
        return perplexity_headline(metrics)
    comparison = metrics.get("comparison", {})
    # contains_answer means something only when rows name a short answer; else it matches the whole reference.
    preferred = ("contains_answer",) if metrics.get("heldout", {}).get("rows_with_answer") else ()
    for key in preferred + ("accuracy", "entity_f1", "preference_accuracy", "pair_accuracy", "desirable_ranked_above",
                            "rouge_l", "token_f1", "exact_match"):
        if key in comparison and key in metrics.get("tuned", {}):
            test = comparison[key]
            verdict = "a real difference" if test.get("significant") else "not distinguishable from noise"
            return (f"{key}: {metrics['baseline'][key]:.1f} → {metrics['tuned'][key]:.1f} "
                    f"({test['difference']:+.1f} points, 95% CI {test['low']:+.1f} to {test['high']:+.1f}; "
                    f"{test['test']} p {format_p(test['p_value'], with_sign=True)}: {verdict})")
    return ""


def perplexity_headline(metrics: dict) -> str:
    """'domain perplexity 41.2 → 18.0 (-56%); general perplexity 20.1 → 21.3 (+6%)' (lower is better)."""
    parts = []
    for name in ("domain", "general"):
        key = f"{name}_perplexity"
        if key in metrics.get("tuned", {}) and key in metrics.get("baseline", {}):
            before, after = metrics["baseline"][key], metrics["tuned"][key]
            parts.append(f"{name} perplexity {before:.2f} → {after:.2f} ({(after - before) / before:+.0%})")
    return "; ".join(parts) + ("; lower is better" if parts else "")


def _perplexity_sets(metrics: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(', '.join(found.get('files', [])) or str(found.get('split', '')))}"
        f"</td><td class=n>{found['documents']}</td><td class=n>{found['scored_tokens']:,} of {found['tokens']:,}</td>"
        "</tr>"
        for name, found in metrics.get("perplexity_sets", {}).items()
    )
    return ("<h2>Perplexity sets</h2><table><tr><th>set</th><th>source</th><th>documents</th><th>tokens scored</th>"
            f"</tr>{rows}</table><p class=muted>Texts packed into blocks of data.max_length as in training; "
            "intervals and p resample blocks (the test is on per-block loss; sets under 10 blocks get none)."
            "</p>") if rows else ""


def _metrics_table(metrics: dict) -> str:
    intervals = metrics.get("intervals", {})
    comparison = metrics.get("comparison", {})
    rows = []
    for key, tuned in metrics.get("tuned", {}).items():
        if key in HIDDEN_METRICS or not isinstance(tuned, int | float):
            continue
        base = metrics.get("baseline", {}).get(key)
        change = "" if base is None else f"{tuned - base:+.2f}"
        direction = "" if base is None or tuned == base else ("up" if (tuned > base) != lower_is_better(key)
                                                               else "down")
        test = comparison.get(key, {})
        p_value = format_p(test["p_value"]) if "p_value" in test else ""
        rows.append(
            f"<tr><td>{escape(key)}</td><td class=n>{_with_interval(base, intervals.get('baseline', {}).get(key))}</td>"
            f"<td class=n>{_with_interval(tuned, intervals.get('tuned', {}).get(key))}</td>"
            f"<td class='n {direction}'>{change}</td><td class=n>{p_value}</td>"
            f"<td>{'yes' if test.get('significant') else ('no' if test else '')}</td></tr>"
        )
    return ("<h2>Baseline vs tuned</h2><table><tr><th>metric</th><th>baseline</th><th>tuned</th><th>change</th>"
            f"<th>p</th><th>real?</th></tr>{''.join(rows)}</table><p class=muted>Brackets: 95% bootstrap intervals "
            "over rows. p: paired test on the same rows (McNemar for right/wrong scores, paired bootstrap else).</p>")


def format_p(p_value: float, with_sign: bool = False) -> str:
    """A bootstrap p of 0 means below its resolution, so it reads '< 0.001' rather than a false '0'."""
    if p_value < 0.001:
        return "< 0.001"
    return f"= {p_value:.3g}" if with_sign else f"{p_value:.3g}"


def lower_is_better(key: str) -> bool:
    """Whether a fall in this metric is an improvement: losses and perplexities."""
    return key.endswith(("loss", "perplexity"))  # validation_loss, domain_perplexity, general_perplexity, ...


def _with_interval(value, interval) -> str:
    if value is None:
        return "–"
    text = f"{value:.2f}"
    if interval and interval[0] is not None:
        digits = 1 if max(abs(interval[0]), abs(interval[1])) >= 10 else 2  # rewards and margins are small numbers
        text += f" <span class=muted>[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]</span>"
    return text


def _metric_chart(metrics: dict) -> str:
    intervals = metrics.get("intervals", {})
    rows = [
        (key, metrics.get("baseline", {}).get(key), value, intervals.get("baseline", {}).get(key),
         intervals.get("tuned", {}).get(key))
        for key, value in metrics.get("tuned", {}).items()
        if key not in HIDDEN_METRICS + UNSCALED_METRICS and not lower_is_better(key) and isinstance(value, int | float)
    ]
    return _img(plots.metric_bars(rows), "baseline and tuned scores with 95% intervals")


def _lengths(lengths: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(side)}</td><td class=n>{found['mean_words']:.1f}</td>"
        f"<td class=n>{found['median_words']:.1f}</td><td class=n>"
        f"{'' if found.get('ratio_to_reference') is None else format(found['ratio_to_reference'], '.2f')}</td></tr>"
        for side, found in lengths.items()
    )
    return ("<h2>Summary lengths</h2><table><tr><th></th><th>mean words</th><th>median words</th>"
            f"<th>mean / reference mean</th></tr>{rows}</table><p class=muted>ROUGE favours summaries about as long "
            "as the reference: a ratio far from 1 explains part of a score.</p>")


def _reward_functions(metrics: dict) -> str:
    """GRPO: which functions scored the held-out replies, their weights, and how far the policy moved."""
    rows = "".join(f"<tr><td>reward/{escape(name)}</td><td>{escape(found['function'])}</td>"
                   f"<td class=n>{found['weight']:g}</td></tr>" for name, found in metrics["rewards"].items())
    kl = metrics.get("tuned", {}).get("kl_from_base")
    moved = (f"<p>Mean per-token log-ratio of tuned to base on the tuned model's greedy replies (an estimate of "
             f"the KL from the base): {kl:.3f} nats.</p>") if isinstance(kl, int | float) else ""
    return ("<h2>Reward functions</h2><table><tr><th>metric</th><th>config entry</th><th>weight</th></tr>"
            f"{rows}</table><p class=muted>Held-out greedy replies scored by each function; reward is their weighted "
            "sum; accuracy is the answer check as right/wrong (%); length_words and length_tokens show whether "
            f"the reward was won by length.</p>{moved}")


def _loss_section(run: RunDir) -> str:
    if not run.train_log.is_file():
        return ""
    records = read_jsonl(run.train_log)
    rewards = plots.reward_curves(records)  # GRPO runs log their reward and KL
    if rewards:
        return ("<h2>Reward and KL</h2>" + _img(rewards, "mean reward per step and KL to the starting model")
                + "<p class=muted>Means over the replies sampled in training (temperature sampling), not held-out "
                "scores; KL on the right axis.</p>")
    section = "<h2>Loss curves</h2>" + _img(plots.loss_curves(records), "training and validation loss")
    preference = plots.preference_curves(records)
    if preference:
        section += ("<h2>Preference training curves</h2>" + _img(preference, "implicit rewards during training")
                    + "<p class=muted>TRL's implicit rewards on each training batch: chosen and rejected replies, "
                    "their margin, and the share of pairs ranked right (dashed, right axis).</p>")
    return section


def _preference(preference: dict) -> str:
    return (f"<h2>Preference metrics</h2><p class=muted>Recipe {escape(str(preference.get('recipe')))}, beta "
            f"{preference.get('beta')}. {escape(preference.get('definitions', ''))}.</p>")


def _safety(safety: dict) -> str:
    verdict = "passed" if safety["passed"] else "failed"
    test = safety["test"]
    worst = "".join(f"<tr><td><span class=ex>{escape(w['prompt'])}</span></td><td><span class=ex>"
                    f"{escape(w['baseline'])}</span></td><td><span class=ex>{escape(w['tuned'])}</span></td>"
                    f"<td class=n>{w['change']:+.3f}</td></tr>" for w in safety.get("worst", []))
    return (f"<h2>Safety gate <span class='badge {verdict}'>{verdict}</span></h2><p>Harmlessness score "
            f"{safety['baseline_score']:.3f} → {safety['tuned_score']:.3f} on {safety['prompts']} prompts of "
            f"{escape(safety['prompts_file'])} (scorer {escape(safety['scorer'])}); difference "
            f"{test['difference']:+.3f} "
            f"[{test['low']:+.3f}, {test['high']:+.3f}], paired bootstrap p {format_p(test['p_value'])}. Rule: "
            f"{escape(safety['rule'])} (max_drop {safety['max_drop']}).</p>"
            + (f"<table class=samples><tr><th>prompt</th><th>baseline</th><th>tuned</th><th>score change</th></tr>"
               f"{worst}</table><p class=muted>The prompts where the tuned model lost most.</p>" if worst else ""))


def _forgetting(forgetting: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(Path(path).name)}</td><td class=n>{found['n']}</td>"
        f"<td class=n>{found['baseline']['acc']:.1f}</td><td class=n>{found['tuned']['acc']:.1f}</td>"
        f"<td class='n {'down' if found['change'] < 0 else 'up'}'>{found['change']:+.1f}</td>"
        f"<td class=n>{found['baseline']['acc_norm']:.1f} → {found['tuned']['acc_norm']:.1f}</td>"
        f"<td>{'<b class=down>exceeds limit</b>' if found.get('exceeded') else ''}</td></tr>"
        for path, found in forgetting.items()
    )
    return ("<h2>Forgetting check</h2><table><tr><th>benchmark</th><th>questions</th><th>base acc</th>"
            f"<th>tuned acc</th><th>change</th><th>acc_norm</th><th></th></tr>{rows}</table>")


def _drift_and_guard(metrics: dict) -> str:
    """Drift from the base on general text, and what each train.guard switch did (docs/forgetting.md)."""
    parts = []
    drift = metrics.get("drift")
    if drift:
        low, high = drift["interval"]
        parts.append(f"<h2>Drift from the base</h2><p>KL(tuned || base) on general text: <b>{drift['kl_per_token']:.4f}"
                     f"</b> nats/token [95% interval {low:.4f}, {high:.4f}] over {drift['documents']} documents "
                     f"({drift['tokens']:,} tokens; {escape(', '.join(Path(f).name for f in drift['files']))}). "
                     "0 means the tuned model predicts general text exactly as the base does.</p>")
    guard = metrics.get("guard") or {}
    if guard:
        items = []
        if "replay" in guard:
            r = guard["replay"]
            items.append(f"replay: {r['replay_rows']} replay rows with {r['task_rows']} task rows (ratio "
                         f"{r['ratio']:g}, from {r['pool_rows']} available)")
        if "self_distill" in guard:
            d = guard["self_distill"]
            items.append(f"self_distill: {d['rewritten']} of {d['rows']} replies rewritten by the base model, "
                         f"{d['kept_original']} kept their original (the rewrite lost the answer)")
        if "kl_to_base" in guard:
            k = guard["kl_to_base"]
            mean = k.get("mean_train_kl_per_token")
            items.append(f"kl_to_base: weight {k['weight']:g}, mean training KL "
                         + (f"{mean:.4f} nats/token" if mean is not None else "not measured"))
        if "interpolate" in guard:
            i = guard["interpolate"]
            curve = "".join(f"<tr><td class=n>{row['alpha']:g}</td><td class=n>{row['validation_loss']:.3f}</td>"
                            f"<td class=n>{row['forgetting']:.3f}</td></tr>" for row in i.get("curve", []))
            items.append(f"interpolate: alpha {i['alpha']:g} ({i['mode']})" + (
                f"; chosen by {escape(i['criterion'])} among alphas keeping {i['keep_gain']:g} of the validation-loss "
                f"gain<table><tr><th>alpha</th><th>validation loss</th><th>forgetting</th></tr>{curve}</table>"
                if curve else ""))
        parts.append("<h2>Forgetting guards</h2><ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>")
    return "".join(parts)


def _classification(classification: dict) -> str:
    parts = ["<h2>Classification</h2>"]
    if classification.get("confusion_matrix"):
        matrix = classification["confusion_matrix"]
        parts.append(_img(plots.confusion_matrix(matrix["labels"], matrix["matrix"]), "confusion matrix"))
    if classification.get("roc_curves"):
        parts.append(_img(plots.roc_curves(classification["roc_curves"]), "ROC curves"))
    return "".join(parts)


def _entity_types(found: dict) -> str:
    """Per entity type: the tuned tagger's precision, recall and F1 beside the baseline's F1."""
    tuned, baseline = found["per_type"]["tuned"], found["per_type"].get("baseline", {})
    rows = "".join(
        f"<tr><td>{escape(kind)}</td><td class=n>{scores['support']}</td>"
        f"<td class=n>{baseline.get(kind, {}).get('f1', 0.0):.1f}</td><td class=n>{scores['precision']:.1f}</td>"
        f"<td class=n>{scores['recall']:.1f}</td><td class=n>{scores['f1']:.1f}</td></tr>"
        for kind, scores in sorted(tuned.items())
    )
    return ("<h2>Entities by type</h2><table><tr><th>type</th><th>entities</th><th>baseline F1</th>"
            f"<th>precision</th><th>recall</th><th>F1</th></tr>{rows}</table><p class=muted>{found['entities']} "
            f"entities in {found['words']} words; an entity counts only when its type and exact span match.</p>")


def _audit(run: RunDir) -> str:
    path = run.root / "audit" / "audit.json"
    if not path.is_file():
        return ""
    findings = read_json(path)["summary"]
    rows = "".join(f"<tr><td>{escape(f['severity'])}</td><td>{escape(f['check'])}</td><td>{escape(f['message'])}</td>"
                   "</tr>" for f in findings)
    body = f"<table>{rows}</table>" if rows else "<p class=up>No problems found.</p>"
    return f"<h2>Data audit</h2>{body}<p class=muted>Full audit: audit/audit.html</p>"


def _samples(run: RunDir, shown: int = 8) -> str:
    if not run.samples.is_file():
        return ""
    cards = []
    for sample in read_jsonl(run.samples)[:shown]:
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in sample["prompt"] if m["role"] != "system")
        cards.append(
            f"<tr><td><span class=ex>{escape(prompt)}</span></td><td><span class=ex>{escape(sample['reference'])}"
            f"</span></td><td><span class=ex>{escape(sample.get('baseline') or '–')}</span></td>"
            f"<td><span class=ex>{escape(sample['tuned'])}</span></td></tr>"
        )
    return ("<h2>Sample outputs</h2><table class=samples><tr><th>prompt</th><th>reference</th><th>baseline</th>"
            "<th>tuned</th></tr>"
            f"{''.join(cards)}</table><p class=muted>All rows: samples.jsonl; review sheet: review.html.</p>")


def _defaults(run: RunDir) -> str:
    """The values the defaults table chose for this run, and why (tuneloop.train.defaults), when it chose any."""
    path = run.root / "defaults.json"
    if not path.is_file():
        return ""
    found = read_json(path)
    rows = "".join(f"<tr><td>train.{escape(c['key'])}</td><td>{escape(str(c['value']))}</td><td>{escape(c['why'])}"
                   f"</td><td>{escape(c['benchmark'])}</td></tr>" for c in found.get("chosen", []))
    parts = ["<h2>Defaults chosen</h2>"]
    if rows:
        parts.append("<p>Keys the config left out, filled from the measured defaults table:</p><table><tr><th>key"
                     f"</th><th>value</th><th>why</th><th>chosen by</th></tr>{rows}</table>")
    if found.get("kept"):
        parts.append(f"<p>Kept as the config set them: {escape(', '.join('train.' + k for k in found['kept']))}.</p>")
    if found.get("fallback"):
        parts.append(f"<p>{escape(found['fallback'])}.</p>")
    return "".join(parts) if len(parts) > 1 else ""


def _few_shot(run: RunDir) -> str:
    """The few-shot preset's changes and its cross-validation (tuneloop.train.few_shot), when it ran."""
    path = run.root / "few_shot.json"
    if not path.is_file():
        return ""
    found = read_json(path)
    changed = ", ".join(f"{key} {old} → {new}" for key, (old, new) in found.get("changed", {}).items()) or "none"
    parts = [f"<h2>Few-shot preset</h2><p>{escape(found['reason'])}. Changed: {escape(changed)}"
             + (f"; kept your {escape(', '.join(found['kept_explicit']))}" if found.get("kept_explicit") else "")
             + ".</p>"]
    if found.get("folds"):
        loss = found["cv_validation_loss"]
        rows = "".join(f"<tr><td class=n>{r['fold']}</td><td class=n>{r['train_rows']}</td>"
                       f"<td class=n>{r['heldout_rows']}</td><td class=n>{r['best_epoch']}</td>"
                       f"<td class=n>{min(r['validation_loss_by_epoch']):.4f}</td></tr>" for r in found["fold_results"])
        parts.append(f"<p>{found['folds']}-fold cross-validation: validation loss {loss['mean']:.4f} ± "
                     f"{loss['std']:.4f} at {found['chosen_epochs']} epoch(s); the final model trained on all "
                     f"{found['final']['train_rows']} rows for {found['final']['epochs']:g} epoch(s).</p>"
                     "<table><tr><th>fold</th><th>train rows</th><th>held-out rows</th><th>best epoch</th>"
                     f"<th>best loss</th></tr>{rows}</table>")
    return "".join(parts)


def _training(run: RunDir) -> str:
    path = run.root / "train_summary.json"
    if not path.is_file():
        return ""
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in read_json(path).items())
    return f"<h2>Training</h2><table>{rows}</table>"
