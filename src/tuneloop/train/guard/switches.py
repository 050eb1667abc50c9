"""What the recipes call to apply train.guard: the check of which switch fits which run, the guarded training
rows (self-distillation, then replay), the record in guard.json, the KL term's base, and interpolation after
training with the measure behind interpolate: auto."""

from __future__ import annotations

from tuneloop.config.schema import RunConfig
from tuneloop.errors import ConfigError
from tuneloop.train.arguments import uses_adapter
from tuneloop.workspace import RunDir, read_json, write_json, write_jsonl

GUARD_RECORD = "guard.json"
PREFERENCE = ("dpo", "cpo", "simpo", "orpo", "kto")
# Where each switch applies, and why not elsewhere (docs/forgetting.md).
APPLIES = {
    "replay": ("sft", "pretrain"),
    "self_distill": ("sft",),
    "kl_to_base": ("sft", "pretrain"),
    "interpolate": ("sft", "pretrain") + PREFERENCE,
    "freeze_layers": ("sft", "pretrain") + PREFERENCE,
}
WHY_NOT = {
    "replay": "preference recipes learn from pairs; replayed replies have no rejected side (use interpolate)",
    "self_distill": "it rewrites replies of instruction data; text and preference rows have no reference reply",
    "kl_to_base": "DPO, KTO and GRPO already hold the model to the reference with their beta; raise it instead",
}


def check_guard(config: RunConfig, recipe: str) -> None:
    """A ConfigError naming the key for a switch this recipe or method cannot apply."""
    guard = config.train.guard
    for name in guard.active():
        if recipe not in APPLIES[name]:
            why = WHY_NOT.get(name, "this recipe does not support it yet")
            raise ConfigError(f"train.guard.{name}: applies to the {', '.join(APPLIES[name])} recipes, not "
                              f"{recipe} ({why}). Remove the key.")
    if guard.freeze_layers is not None and config.train.method != "full":
        raise ConfigError(f"train.guard.freeze_layers: applies to full fine-tuning (train.method: full); "
                          f"{config.train.method} already trains only its adapter and leaves every base layer "
                          "frozen. Remove the key.")
    interpolate = guard.interpolate
    if interpolate is not None:
        from tuneloop.train.guard.interpolate import INTERPOLABLE_METHODS

        if config.train.method not in INTERPOLABLE_METHODS:
            raise ConfigError(f"train.guard.interpolate: works with train.method lora or full (got "
                              f"{config.train.method!r}); remove the key or change the method.")
        if interpolate.alpha == "auto" and not (config.evaluate.forgetting or config.evaluate.drift_texts):
            raise ConfigError("train.guard.interpolate: auto picks alpha by how much the model forgets, so it needs "
                              "evaluate.forgetting (multiple-choice files) or evaluate.drift_texts (general text); "
                              "add one, or give a number such as 0.5.")


def record(run: RunDir, key: str, value) -> None:
    """Add one switch's counts or curve to the run's guard.json (the evaluate stage copies it into metrics.json)."""
    path = run.root / GUARD_RECORD
    found = read_json(path) if path.is_file() else {}
    found[key] = value
    write_json(path, found)


def reset_record(run: RunDir) -> None:
    (run.root / GUARD_RECORD).unlink(missing_ok=True)


def guarded_train_rows(config: RunConfig, run: RunDir, rows: list[dict], kind: str, base_path: str, tokenizer,
                       device: str, dtype, console_print=print) -> list[dict]:
    """The training rows with train.guard's data switches applied: self-distillation, then replay.

    kind: "chat" (SFT rows with messages) or "text" (continued pretraining's {"text"} documents).
    """
    guard = config.train.guard
    if guard.self_distill is not None and kind == "chat":
        from tuneloop.train.guard.self_distill import self_distill_rows

        rows, counts = self_distill_rows(rows, guard.self_distill, base_path, tokenizer, device, dtype,
                                         console_print)
        record(run, "self_distill", counts)
        (run.root / "guard").mkdir(exist_ok=True)
        write_jsonl(run.root / "guard" / "self_distill.jsonl", rows)  # what was trained on, to read and audit
    if guard.replay is not None:
        from tuneloop.train.guard.replay import file_rows, mix_replay, self_replay_rows

        settings = guard.replay
        pool = file_rows(settings.files, kind)
        if settings.self_prompts:
            (run.root / "guard").mkdir(exist_ok=True)
            pool += self_replay_rows(settings.self_prompts, base_path, tokenizer, settings.max_new_tokens, kind,
                                     device, dtype, config.evaluate.batch_size, console_print,
                                     copy_to=run.root / "guard" / "self_replay.jsonl")
        rows, counts = mix_replay(rows, pool, settings.ratio, config.seed)
        counts["sources"] = {"files": list(settings.files), "self": settings.self_prompts}
        console_print(f"replay: {counts['replay_rows']} replay row(s) join {counts['task_rows']} training row(s) "
                      f"(ratio {settings.ratio:g}" + (", drawn with repeats" if counts["repeated"] else "") + ")")
        record(run, "replay", counts)
    return rows


def forgetting_measure(config: RunConfig, tokenizer, validation_loss_of, device: str, console_print=print):
    """measure(model) for interpolate: auto: validation loss, and forgetting as accuracy lost on multiple-choice
    questions the final evaluation does not score (or, without forgetting files, KL from the base on drift texts).

    validation_loss_of(model) -> float is the recipe's own validation loss.
    """
    evaluate = config.evaluate
    settings = config.train.guard.interpolate
    if evaluate.forgetting:
        from tuneloop.models.multiple_choice import load_questions, score_multiple_choice

        questions = []
        for path in evaluate.forgetting:
            every = load_questions(path, evaluate.forgetting_format)
            unseen = every[evaluate.forgetting_limit:] if evaluate.forgetting_limit else []
            if not unseen:
                console_print(f"interpolate: {path} has no questions beyond evaluate.forgetting_limit; auto picks "
                              "alpha on the questions the final evaluation scores too")
                unseen = every
            questions += unseen[: settings.questions]
        base_accuracy: list[float] = []

        def measure(model) -> dict:
            model.eval()
            accuracy = score_multiple_choice(model, tokenizer, questions, evaluate.batch_size)["acc"]
            if not base_accuracy:  # alpha 0 (the base) is measured first
                base_accuracy.append(accuracy)
            return {"validation_loss": validation_loss_of(model), "accuracy": accuracy,
                    "forgetting": base_accuracy[0] - accuracy, "criterion": f"accuracy lost ({len(questions)} "
                    "multiple-choice questions)"}
        return measure
    from tuneloop.train.guard.drift import document_kl, drift_documents

    documents = drift_documents(evaluate.drift_texts, tokenizer, config.data.max_length,
                                min(evaluate.drift_max_documents, 16))  # their base logits are kept in memory
    base_logits: list = []

    def measure(model) -> dict:
        model.eval()
        if not base_logits:  # alpha 0 is the base: keep its logits of these few documents to compare against
            base_logits.append(_logits_by_shape(model, documents, tokenizer.pad_token_id))
            kl = 0.0
        else:
            cached = base_logits[0]
            sums, counts = document_kl(model, lambda ids, mask: cached[(tuple(ids.shape), int(ids[0, 0]),
                                                                        int(mask.sum()))],
                                       documents, tokenizer.pad_token_id)
            kl = float(sums.sum() / max(counts.sum(), 1))
        return {"validation_loss": validation_loss_of(model), "forgetting": kl,
                "criterion": f"KL from the base ({len(documents)} drift documents)"}
    return measure


def _logits_by_shape(model, documents, pad_token_id):
    """The base model's logits of each batch document_kl forms, keyed by what identifies the batch."""
    cache = {}

    def remember(ids, mask):
        cache[(tuple(ids.shape), int(ids[0, 0]), int(mask.sum()))] = logits = model(
            input_ids=ids, attention_mask=mask).logits.float()
        return logits

    from tuneloop.train.guard.drift import document_kl

    document_kl(model, remember, documents, pad_token_id)
    return cache


def setup_kl_term(trainer, config: RunConfig, base_path: str, device: str, compute_dtype) -> None:
    """Give a kl_trainer its weight and its base: the adapter switched off, or a frozen copy (full)."""
    from tuneloop.train.guard.kl import base_reference, frozen_copy
    from tuneloop.train.packed_attention import register_packed_attention

    trainer.guard_kl_weight = config.train.guard.kl_to_base
    if not uses_adapter(config.train.method):
        attention = register_packed_attention() if config.train.packing else None
        trainer.guard_reference = base_reference(None, frozen_copy(base_path, compute_dtype, device, attention))


def interpolate_trained(config: RunConfig, run: RunDir, model, base_path: str, tokenizer, device: str,
                        console_print, validation_loss_of) -> None:
    """train.guard.interpolate on the trained model (in place), recorded in guard.json."""
    import time

    from tuneloop.train.guard.interpolate import interpolate_after_training

    started = time.perf_counter()
    measure = None
    if config.train.guard.interpolate.alpha == "auto":
        measure = forgetting_measure(config, tokenizer, validation_loss_of, device, console_print)
    found = interpolate_after_training(model, config.train.guard.interpolate, config.train.method, base_path,
                                       measure, console_print)
    found["seconds"] = round(time.perf_counter() - started, 1)
    model.train()
    record(run, "interpolate", found)
