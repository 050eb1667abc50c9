"""DPO-family recipe: tune a causal LM on preference pairs with TRL's DPOTrainer, or its reference-free cousins.

Reads data/{train,validation}.jsonl (canonical pairs: prompt messages, chosen, rejected) and writes
adapter/ (LoRA) or model/ (full), checkpoints/, train_log.jsonl and train_summary.json, as recipes/sft.py.

train.recipe picks the objective:
    dpo    TRL's DPOTrainer; train.preference.loss is its loss_type (sigmoid = DPO, ipo, hinge, robust,
           bco_pair, apo_zero, ...), with beta and label_smoothing. train.preference.sft_weight adds the
           SFT loss on chosen replies (LLaMA-Factory's pref_ftx; TRL's "sft" loss term).
           The reference model: with LoRA, the same model with its adapter switched off (TRL does this when
           it wraps the model itself from a peft_config and no ref_model is given: no second copy in
           memory); continuing an adapter (model.adapter, as `tuneloop retrain` does from the served run), a
           frozen copy of that adapter as loaded, so the served model is the reference. With full
           fine-tuning TRL loads a second copy, unless train.preference.precompute_ref_log_probs scores the
           reference once before training.
    cpo    TRL's CPOTrainer (trl.experimental.cpo): the DPO-style loss on the policy alone plus
           behaviour cloning on chosen replies (sft_weight); no reference model.
    simpo  CPOTrainer with loss_type simpo and no behaviour-cloning term: length-normalized rewards with a
           target margin (train.preference.simpo_gamma); no reference model.
    orpo   TRL's ORPOTrainer (trl.experimental.orpo): SFT on chosen replies plus an odds-ratio term
           weighted by beta; no reference model.
TRL logs rewards/chosen, rewards/rejected, rewards/margins and rewards/accuracies; they land in
train_log.jsonl and the report's plots.

The fast path (dpo with train.packing, on by default; docs/performance.md): a subclass of DPOTrainer whose
batches are one padding-free row (tuneloop.train.packed_preference: each pair's prompt once, then chosen and
rejected, each reply attending to its prompt and itself only), whose LM head scores reply tokens only, in
chunks, and whose reference log-probs are computed once before training (adapter switched off, or the
untrained full model) and cached with the pairs, so no step runs the reference and full fine-tuning keeps no
second copy. It takes the losses in PACKED_DPO_LOSSES;
another train.preference.loss, or prefix/prompt tuning, takes TRL's padded path (one console line says so).

Raises:
    ConfigError: an option that cannot work (a chat template the model lacks, a loss the trainer refuses).
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

import functools
import warnings

from tuneloop.config.schema import DPO_LOSSES, RunConfig
from tuneloop.errors import ConfigError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm
from tuneloop.models.registry import resolve_model
from tuneloop.recipes.preference_data import preference_rows
from tuneloop.train.arguments import (
    common_training_arguments,
    drop_reference_adapter,
    reference_description,
    trainer_lora,
    uses_adapter,
    wrap_with_lora,
)
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point
from tuneloop.train.guard.freeze import freeze_lowest_blocks
from tuneloop.train.guard.switches import check_guard, interpolate_trained, reset_record
from tuneloop.train.lean_activations import recompute_cheap_activations
from tuneloop.train.model_setup import keep_adapter_inputs_in_compute_dtype, setup_tokenizer
from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.train.packed_preference import (
    PACKED_DPO_LOSSES,
    PackedPairCollator,
    PackedTrainerSteps,
    install_reply_log_probs,
    preference_losses,
    sequence_log_probs,
)
from tuneloop.workspace import RunDir

REFERENCE_FREE = ("cpo", "simpo", "orpo")


def train_preference(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train with the train.recipe objective (auto = dpo) and save; return the summary in train_summary.json."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import set_seed

    datasets.disable_progress_bars()  # TRL maps the rows several times; our own bar shows the training

    recipe = "dpo" if config.train.recipe == "auto" else config.train.recipe
    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    tokenizer = setup_tokenizer(config, base_path)
    train_dataset = Dataset.from_list(preference_rows(config, run, "train", tokenizer, console_print))
    validation_dataset = Dataset.from_list(preference_rows(config, run, "validation", tokenizer, console_print))
    lora = uses_adapter(config.train.method)
    # Frozen LoRA base weights need no fp32 master copy (as in recipes/sft.py); trained weights stay fp32.
    weights_dtype = compute_dtype if lora and config.train.low_precision_base else torch.float32
    packed = _packed_path(recipe, config, console_print)
    model = load_causal_lm(base_path, weights_dtype, device, register_packed_attention() if packed else None)
    model.config.use_cache = False
    if packed:
        install_reply_log_probs(model, compute_dtype)  # before TRL adds its fused LM head, which passes it on
        if config.train.lean_activations:
            recompute_cheap_activations(model)
    check_guard(config, recipe)
    reset_record(run)
    if config.train.guard.freeze_layers:
        freeze_lowest_blocks(model, config.train.guard.freeze_layers)

    checkpoint = resume_point(run, resume, console_print)
    trainer = _trainer(recipe, config, run, model, tokenizer, train_dataset, validation_dataset, device,
                       compute_dtype, tracker, packed)
    replace_default_printing(trainer)
    if lora and weights_dtype != torch.float32:
        keep_adapter_inputs_in_compute_dtype(trainer.model)

    reference = "none (reference-free)" if recipe in REFERENCE_FREE else reference_description(
        config, lora, packed or (config.train.preference.precompute_ref_log_probs and not lora))
    console_print(
        f"train: {recipe} ({config.train.method}) on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(train_dataset)} pairs, reference: {reference}, "
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    drop_reference_adapter(trainer.model)
    if config.train.guard.interpolate is not None and trainer.is_world_process_zero():
        interpolate_trained(config, run, trainer.model, base_path, tokenizer, device, console_print,
                            lambda m, t=trainer: t.evaluate()["eval_loss"])
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                              recipe=recipe, beta=config.train.preference.beta,
                              loss=config.train.preference.loss if recipe in ("dpo", "cpo") else recipe)
    del trainer, model
    release_memory(device)
    return summary


def _packed_path(recipe: str, config: RunConfig, console_print) -> bool:
    """Whether this run takes the packed DPO path; says why not when train.packing asked for it."""
    train = config.train
    if recipe != "dpo" or not train.packing:
        return False
    losses = [train.preference.loss] + (["sft"] if train.preference.sft_weight else [])
    reason = (f"train.method {train.method} adds virtual tokens" if train.method in ("prefix", "prompt") else
              f"train.preference.loss {train.preference.loss} needs TRL's padded batches"
              if not set(losses) <= set(PACKED_DPO_LOSSES) else None)
    if reason:
        console_print(f"train: {reason}; TRL's padded path for this run (slower; train.packing does not apply)")
    return reason is None


def _trainer(recipe: str, config: RunConfig, run: RunDir, model, tokenizer, train_dataset, validation_dataset,
             device: str, compute_dtype, tracker, packed: bool = False):
    preference = config.train.preference
    arguments = common_training_arguments(config, run, device, compute_dtype)
    arguments.update(max_length=config.data.max_length, beta=preference.beta)
    common = {"train_dataset": train_dataset, "eval_dataset": validation_dataset, "processing_class": tokenizer,
              "callbacks": trainer_callbacks(config, run, tracker)}
    lora = uses_adapter(config.train.method)
    if recipe == "dpo":
        from trl import DPOConfig, DPOTrainer

        if preference.loss not in DPO_LOSSES:
            raise ConfigError(f"train.preference.loss={preference.loss!r}: train.recipe dpo takes one of "
                              f"{', '.join(DPO_LOSSES)} (kto and apo_zero_unpaired are for train.recipe kto).")

        losses, weights = [preference.loss], [1.0]
        if preference.sft_weight:
            losses.append("sft")
            weights.append(preference.sft_weight)
        if packed:
            # The reference is scored once, two batches at a time.
            arguments.update(include_num_input_tokens_seen="all", precompute_ref_batch_size=2 * config.train.batch_size)
        args = DPOConfig(**arguments, loss_type=losses, loss_weights=weights,
                         label_smoothing=preference.label_smoothing,
                         precompute_ref_log_probs=packed or (preference.precompute_ref_log_probs and not lora))
        # Given the bare model and a peft_config (or a model holding model.adapter), TRL scores the reference with
        # the adapter off.
        model, peft_config = trainer_lora(model, config, "CAUSAL_LM") if lora else (model, None)
        trainer_class = packed_dpo_trainer() if packed else DPOTrainer
        extra = {"data_collator": PackedPairCollator(config.data.max_length)} if packed else {}
        return _checked(lambda: trainer_class(model=model, ref_model=None, args=args, peft_config=peft_config,
                                              **common, **extra))
    if preference.loss not in ("sigmoid", "hinge", "ipo") and recipe == "cpo":
        raise ConfigError(f"train.preference.loss={preference.loss!r}: train.recipe cpo takes sigmoid, hinge or ipo.")
    if lora:
        model = wrap_with_lora(model, config, "CAUSAL_LM")
    with warnings.catch_warnings():  # the experimental trainers announce that they are experimental
        warnings.simplefilter("ignore")
        if recipe in ("cpo", "simpo"):
            from trl.experimental.cpo import CPOConfig, CPOTrainer

            extra = ({"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": preference.simpo_gamma}
                     if recipe == "simpo" else
                     {"loss_type": preference.loss, "label_smoothing": preference.label_smoothing,
                      "cpo_alpha": 1.0 if preference.sft_weight is None else preference.sft_weight})
            args = CPOConfig(**arguments, **extra)
            return _checked(lambda: CPOTrainer(model=model, args=args, **common))
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**arguments)
        return _checked(lambda: ORPOTrainer(model=model, args=args, **common))


def _checked(build):
    """Build a TRL trainer; its ValueErrors about options become ConfigErrors naming our keys."""
    try:
        return build()
    except ValueError as exc:
        raise ConfigError(f"train.preference: TRL refused the settings: {exc}") from None


@functools.cache
def packed_dpo_trainer():
    """DPOTrainer on packed pairs (tuneloop.train.packed_preference) with the reference log-probs cached."""
    from trl import DPOTrainer

    class PackedDPOTrainer(PackedTrainerSteps, DPOTrainer):
        """DPOTrainer whose batches are PackedPairCollator rows and whose losses come from summed reply log-probs."""

        def compute_ref_log_probs(self, model, inputs):
            # TRL calls this once per batch before training (precompute_ref_log_probs); the result is cached.
            return self.reference_log_probs(model, inputs).chunk(2)

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            sums, counts, token_log_probs = sequence_log_probs(model, inputs)
            chosen, rejected = sums.chunk(2)
            chosen_tokens, rejected_tokens = counts.chunk(2)
            pairs = chosen.shape[0]
            loss = preference_losses(
                self.loss_types, self.loss_weights, self.beta, self.label_smoothing, chosen, rejected,
                inputs["ref_chosen_logps"], inputs["ref_rejected_logps"], chosen_tokens, rejected_tokens,
                token_log_probs[inputs["sequence_index"] < pairs])
            gather = self.accelerator.gather
            chosen_rewards = self.beta * (chosen.detach() - inputs["ref_chosen_logps"])
            rejected_rewards = self.beta * (rejected.detach() - inputs["ref_rejected_logps"])
            metrics = self._metrics[mode]
            metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
            metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
            metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
            metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
            metrics["logps/chosen"].append(gather(chosen.detach()).mean().item())
            metrics["logps/rejected"].append(gather(rejected.detach()).mean().item())
            if mode == "train":
                self._total_train_tokens += gather(inputs["sequence_tokens"]).sum().item()
            metrics["num_tokens"] = [self._total_train_tokens]
            return (loss, {}) if return_outputs else loss

        def _track_num_input_tokens(self, inputs):
            # The tokens the pairs hold (each prompt with both replies), as a padded trainer's non-padding count;
            # the row itself computes each prompt once.
            if self.args.include_num_input_tokens_seen != "no":
                tokens = inputs["sequence_tokens"].to(self.args.device)
                self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    return PackedDPOTrainer
