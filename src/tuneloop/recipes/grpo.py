"""GRPO recipe: reinforcement learning from reward functions on prompt-only data, LoRA or full, on TRL's GRPOTrainer.

Reads data/train.jsonl (prompt_only rows: a chat prompt and reference columns) written by the data stage and
writes adapter/ (LoRA) or model/ (full), checkpoints/, train_log.jsonl (with TRL's `reward`, `kl` and
`rewards/<name>/mean`) and train_summary.json into the run directory.

For each prompt the model samples train.grpo.num_generations replies; every function in train.rewards scores
each reply (tuneloop.train.rewards); a reply's advantage is its weighted reward minus its group's mean (divided
by the group's spread, train.grpo.scale_rewards), and the policy gradient raises the likelihood of the replies
that beat their group, clipped as in PPO. train.grpo.beta adds a KL penalty to the starting model.

Features:
    - LoRA through PEFT (the KL reference is the adapter switched off: no second copy in memory) or full
      fine-tuning (TRL loads a frozen reference copy when beta > 0).
    - Generation through transformers with the KV cache, so it runs on a CPU (no vLLM needed; vLLM settings are
      TRL's to add on a GPU).
    - The fast path (train.packing, on by default; docs/performance.md): a subclass of GRPOTrainer that samples
      each group from one prefill of its prompt (the KV cache copied to the group's rows) and runs the policy,
      reference and old-policy passes on one padding-free row per batch, each prompt once with all its replies,
      the LM head on reply tokens only (tuneloop.train.packed_groups). The losses, advantages and logged
      metrics are TRL's own.
    - train.batch_size counts sampled replies: each step sees batch_size / num_generations prompts.
    - No validation pass during training: a generation-based evaluation costs as much as training here; the
      evaluate stage scores held-out prompts with every reward function, baseline beside tuned.
    - Checkpoints every train.save_every steps; Ctrl-C or SIGTERM saves one and stops; resume continues.

Raises:
    ConfigError: a bad train.rewards entry, a reward function needing a column the data lacks, or a batch size
        that is not a multiple of num_generations.
    RewardFunctionError: a reward function raised or returned the wrong number of values during training.
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

import functools

from tuneloop.config.schema import RunConfig
from tuneloop.errors import ConfigError, DataError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import common_training_arguments, trainer_lora, uses_adapter
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point
from tuneloop.train.lean_activations import recompute_cheap_activations
from tuneloop.train.model_setup import setup_tokenizer
from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.train.packed_groups import group_token_log_probs, shared_prompt_generate
from tuneloop.train.packed_preference import install_reply_log_probs
from tuneloop.train.rewards import RewardFunction, resolve_rewards
from tuneloop.workspace import RunDir, read_jsonl


def train_grpo(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    from transformers import set_seed
    from trl import GRPOTrainer

    set_seed(config.seed)
    rewards = reward_functions(config)
    check_batch_size(config)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    tokenizer = setup_tokenizer(config, base_path)
    train_dataset = _setup_data(run, rewards)
    fast = config.train.packing
    model = _setup_model(config, base_path, device, compute_dtype, fast)
    # TRL wraps a fresh adapter (or takes the model holding model.adapter), so beta's reference is the adapter off.
    lora = uses_adapter(config.train.method)
    model, peft_config = trainer_lora(model, config, "CAUSAL_LM") if lora else (model, None)

    checkpoint = resume_point(run, resume, console_print)
    trainer_class = fast_grpo_trainer() if fast else GRPOTrainer
    trainer = trainer_class(
        model=model,
        reward_funcs=rewards,
        args=_training_arguments(config, run, device, compute_dtype, rewards),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=trainer_callbacks(_without_early_stopping(config), run, tracker),
        peft_config=peft_config,
    )
    replace_default_printing(trainer)

    grpo = config.train.grpo
    console_print(
        f"train: GRPO ({config.train.method}) on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(train_dataset)} prompts, {grpo.num_generations} replies "
        f"each, rewards {', '.join(r.name for r in rewards)}, beta {grpo.beta:g}, "
        + ("prompt-shared sampling and packed groups, " if fast else "TRL's padded path (train.packing false), ")
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                              recipe="grpo", rewards=[r.name for r in rewards], **_reward_curve_summary(run))
    del trainer, model
    release_memory(device)
    return summary


def _setup_model(config: RunConfig, base_path: str, device: str, compute_dtype, fast: bool):
    """The causal LM; with LoRA its frozen weights stay in the compute dtype (train.low_precision_base), which
    makes sampling, the policy pass and the reference pass (adapter off) cheaper. Trained weights stay fp32.
    PEFT keeps casting each adapter's input to fp32 here: TRL samples outside autocast. On the fast path the
    model gets the packed attention and the reply log-prob forward, before TRL adds its fused LM head."""
    import torch

    lora = uses_adapter(config.train.method)
    weights_dtype = compute_dtype if lora and config.train.low_precision_base else torch.float32
    model = load_causal_lm(base_path, weights_dtype, device, register_packed_attention() if fast else None)
    if fast:
        install_reply_log_probs(model, compute_dtype)
        if config.train.lean_activations:
            recompute_cheap_activations(model)
    return model


@functools.cache
def fast_grpo_trainer():
    """GRPOTrainer whose sampling prefills each prompt once per group and whose log-prob passes run packed groups
    (tuneloop.train.packed_groups); what it cannot take (vLLM, images, tools' masks, MoE aux losses) goes to
    TRL's own code."""
    import torch
    from trl import GRPOTrainer
    from trl.extras.profiling import profiling_context
    from trl.models import unwrap_model_for_generation

    class FastGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            if (self.use_vllm or self.use_transformers_continuous_batching or images is not None
                    or multimodal_fields or self.pad_to_multiple_of is not None):
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                     has_tool_images)
            with (
                profiling_context(self, "transformers.generate"),
                unwrap_model_for_generation(
                    self.model_wrapped, self.accelerator,
                    gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                    generation_kwargs=self.generation_kwargs,
                    gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
                ) as unwrapped_model,
                torch.no_grad(),
                self._dist.summon_full_params(self.model_wrapped, recurse=False),
            ):
                prompt_completion_ids = shared_prompt_generate(
                    unwrapped_model, prompt_ids, self._tokenizer.pad_token_id, generation_config=self.generation_config)
            completion_ids = prompt_completion_ids[:, max(len(ids) for ids in prompt_ids):].cpu()
            # Each reply ends at its first end-of-sequence token, which it keeps (as TRL's own path).
            is_end = torch.isin(completion_ids, torch.tensor(self.eos_token_ids))
            ends = torch.where(is_end.any(dim=1), is_end.int().argmax(dim=1) + 1, completion_ids.shape[1])
            return [ids[:end].tolist() for ids, end in zip(completion_ids, ends.tolist(), strict=True)], None

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **multimodal):
            if not compute_aux_loss and all(value is None for value in multimodal.values()):
                with self.accelerator.autocast():
                    packed = group_token_log_probs(model, input_ids, attention_mask, logits_to_keep,
                                                   self.temperature, compute_entropy)
                if packed is not None:
                    return (*packed, None)
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **multimodal)

    return FastGRPOTrainer


def check_grpo_config(config: RunConfig, data_format: str) -> None:
    """ConfigError unless this run can train with GRPO: prompt_only data and reward functions that resolve."""
    if data_format != "prompt_only":
        raise ConfigError(f"train.recipe=grpo trains on prompt_only data ({{prompt, <reference columns>}} rows, or "
                          f"messages ending with the user's turn), but this run's data is in the {data_format} "
                          "format. Give prompt-only rows, or set train.recipe: auto.")
    if config.train.recipe not in ("auto", "grpo"):
        raise ConfigError(f"train.recipe={config.train.recipe!r} cannot train on prompt_only data (prompts with no "
                          "reply); set train.recipe: grpo (or auto) and name reward functions in train.rewards.")
    if not config.train.rewards:
        raise ConfigError("train.rewards: the training data holds prompts without replies (prompt_only), which "
                          "GRPO trains on by sampling replies and scoring them, but no reward function is "
                          "configured. Add one, e.g. `train.rewards: [{function: answer_match, column: answer}]` "
                          "(built-ins: answer_match, format_regex, json_keys, length_penalty; or 'file.py:function', "
                          "or a reward-model run directory). See docs/recipes/grpo.md.")
    reward_functions(config)  # a bad entry fails now, before the model loads


def reward_functions(config: RunConfig) -> list[RewardFunction]:
    """The configured reward functions; a ConfigError when there are none or an entry is bad."""
    if not config.train.rewards:
        raise ConfigError(
            "train.rewards: GRPO needs at least one reward function to score the sampled replies, and none is "
            "configured. Add e.g. `train.rewards: [{function: answer_match, column: answer}]`, a function of your "
            "own ('my_rewards.py:score'), or a reward-model run directory (docs/recipes/grpo.md)."
        )
    return resolve_rewards(config.train.rewards)


def check_batch_size(config: RunConfig) -> None:
    generations = config.train.grpo.num_generations
    per_generation = config.train.batch_size * config.train.gradient_accumulation
    if per_generation % generations:
        raise ConfigError(
            f"train.batch_size: {config.train.batch_size} sampled replies per step (x train.gradient_accumulation="
            f"{config.train.gradient_accumulation}) is not a multiple of train.grpo.num_generations={generations}; "
            "every prompt's group of replies must fit in one batch. Set train.batch_size to a multiple of "
            f"{generations}, e.g. {generations * max(1, config.train.batch_size // generations)}."
        )


def _setup_data(run: RunDir, rewards: list[RewardFunction]):
    from datasets import Dataset

    rows = read_jsonl(run.split("train"))
    if not rows or not isinstance(rows[0].get("prompt"), list):
        raise DataError(f"data: {run.split('train')} holds no prompt_only rows; GRPO trains on prompts "
                        "({prompt, <reference columns>} or {messages ending with the user's turn}).")
    columns = sorted({key for row in rows for key in row if key != "prompt"})
    for reward in rewards:
        reward.check_columns(columns)
    try:
        return Dataset.from_list(rows)
    except Exception as exc:  # pyarrow: a column with numbers in some rows and text in others
        raise DataError(f"data: the prompt_only columns cannot form one table ({exc}). Give each column one type "
                        "in every row (e.g. answers all as text).") from None


def _without_early_stopping(config: RunConfig) -> RunConfig:
    """GRPO has no validation loss to stop on (the evaluate stage measures held-out reward instead)."""
    return config.model_copy(update={"train": config.train.model_copy(update={"early_stopping_patience": None})})


def _training_arguments(config: RunConfig, run: RunDir, device: str, compute_dtype, rewards: list[RewardFunction]):
    from trl import GRPOConfig

    grpo = config.train.grpo
    arguments = common_training_arguments(config, run, device, compute_dtype)
    arguments.update(
        eval_strategy="no",
        load_best_model_at_end=False,
        include_num_input_tokens_seen="no",  # GRPO's inputs are sampled inside the step; TRL counts its own tokens
        remove_unused_columns=False,  # the reference columns reach the reward functions
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        top_p=grpo.top_p,
        beta=grpo.beta,
        loss_type=grpo.loss_type,
        scale_rewards=grpo.scale_rewards,
        num_iterations=grpo.num_iterations,
        reward_weights=[r.weight for r in rewards],
        use_vllm=False,
        log_completions=False,
    )
    return GRPOConfig(**arguments)


def _reward_curve_summary(run: RunDir) -> dict:
    """The mean reward and KL over the first and last logged steps, from train_log.jsonl."""
    records = [r for r in read_jsonl(run.train_log) if "reward" in r] if run.train_log.is_file() else []
    if not records:
        return {}
    window = max(1, len(records) // 4)
    first, last = records[:window], records[-window:]

    def mean(items, key):
        values = [r[key] for r in items if isinstance(r.get(key), int | float)]
        return round(sum(values) / len(values), 4) if values else None

    return {"reward_first": mean(first, "reward"), "reward_last": mean(last, "reward"),
            "kl_last": mean(last, "kl")}
