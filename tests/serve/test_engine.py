"""The in-process engine: adapters on one shared base batched together, joining mid-flight, hot swap."""

from __future__ import annotations

import asyncio

import torch

from tuneloop.serve import decode
from tuneloop.serve.engine import Finished, GenerationRequest
from tuneloop.serve.local_engine import LocalEngine
from tuneloop.serve.run_weights import read_run

PROMPT = [{"role": "user", "content": "How long is the warranty?"}]


def reference_reply(engine: LocalEngine, model_id: str, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """What PEFT + transformers generate() give for this adapter alone (greedy)."""
    served = engine._served[model_id]
    model = served.group.model
    model.set_adapter(served.adapter_name)
    output = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=max_tokens, do_sample=False,
                            eos_token_id=sorted(served.stop_ids), pad_token_id=served.group.pad_id)
    tokens = output[0, len(prompt_ids):].tolist()
    return [t for t in tokens if t not in served.stop_ids]


async def collect(engine: LocalEngine, request: GenerationRequest) -> Finished:
    async for event in engine.generate(request):
        if isinstance(event, Finished):
            return event
    raise AssertionError("no Finished event")


def test_two_adapters_in_one_batch_answer_as_each_alone(adapter_runs, monkeypatch):
    engine = LocalEngine(max_batch_size=8)
    for name in ("alpha", "beta"):
        engine.add(name, read_run(adapter_runs[name]))
    groups = {id(served.group) for served in engine._served.values()}
    assert len(groups) == 1  # one copy of the base weights

    seen: list[list[str]] = []
    forward = decode._forward

    def recording(model, input_ids, mask, positions, cache, rows, peft):
        seen.append([row.adapter for row in rows])
        return forward(model, input_ids, mask, positions, cache, rows, peft)

    monkeypatch.setattr(decode, "_forward", recording)
    prompts = {"alpha": engine.encode_chat("alpha", PROMPT),
               "beta": engine.encode_chat("beta", PROMPT + [{"role": "user", "content": "And the e-bike?"}])}

    async def both():
        await engine.start()
        try:
            return await asyncio.gather(*(collect(engine, GenerationRequest(name, prompts[name], 12, temperature=0))
                                          for name in ("alpha", "beta", "alpha", "beta")))
        finally:
            await engine.stop()

    alpha, beta, alpha_again, beta_again = asyncio.run(both())
    assert any(len(set(names)) == 2 for names in seen), seen  # both adapters in one forward pass
    assert alpha.text != beta.text
    assert (alpha.text, beta.text) == (alpha_again.text, beta_again.text)
    for name, finished in (("alpha", alpha), ("beta", beta)):
        expected = reference_reply(engine, name, prompts[name], 12)
        tokenizer = engine._served[name].tokenizer
        assert finished.text == tokenizer.decode(expected, skip_special_tokens=True), name


def test_rows_join_a_running_batch_and_leave_it_early(adapter_runs):
    engine = LocalEngine(max_batch_size=8)
    engine.add("alpha", read_run(adapter_runs["alpha"]))
    prompt = engine.encode_chat("alpha", PROMPT)

    async def staggered():
        await engine.start()
        try:
            long = asyncio.create_task(collect(engine, GenerationRequest("alpha", prompt, 40, temperature=0)))
            await asyncio.sleep(0.05)  # the long row is decoding when the short ones arrive
            short = await asyncio.gather(*(collect(engine, GenerationRequest("alpha", prompt[:-3], 3, temperature=0))
                                           for _ in range(3)))
            return await long, short
        finally:
            await engine.stop()

    long, short = asyncio.run(staggered())
    alone = asyncio.run(_alone(engine, GenerationRequest("alpha", prompt[:-3], 3, temperature=0)))
    assert long.completion_tokens == 40 or long.finish_reason == "stop"
    assert all(s.text == alone.text for s in short)


async def _alone(engine, request):
    await engine.start()
    try:
        return await collect(engine, request)
    finally:
        await engine.stop()


def test_load_swaps_a_model_ids_weights_while_serving(adapter_runs):
    engine = LocalEngine()
    engine.add("bot", read_run(adapter_runs["alpha"]))
    prompt = engine.encode_chat("bot", PROMPT)

    async def swap():
        await engine.start()
        try:
            before = await collect(engine, GenerationRequest("bot", prompt, 10, temperature=0))
            info = await engine.load("bot", adapter_runs["beta"])
            after = await collect(engine, GenerationRequest("bot", prompt, 10, temperature=0))
            await asyncio.sleep(0.05)
            return before, info, after
        finally:
            await engine.stop()

    before, info, after = asyncio.run(swap())
    assert info.run_dir == adapter_runs["beta"]
    assert before.text != after.text
    assert engine.models()["bot"].version == info.version
    assert len(engine._served["bot"].group.model.peft_config) == 1  # the replaced adapter was deleted
