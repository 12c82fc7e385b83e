"""The ``transformers`` backend: a guard model from a local directory, greedy decoding in torch.

The model runs in its own thread through a :class:`~classifiers.batcher.MicroBatcher`, off the
event loop; concurrent calls share ``generate`` passes (left-padded, so that every row's answer
follows its last real token). The first-token probabilities come from the raw logits of each
step (``output_logits``), not the processed scores, so that no generation default reshapes them.

Prompts cross into the thread as JSON strings (the batcher queues strings), and are rendered and
tokenised there. Chat prompts go through the model's own chat template with
``sanitize_control_tokens``: a text that contains the template's control tokens
(``<|eot_id|>``...) is encoded as plain text, so a user cannot close the turn and write the
guard's verdict in it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from classifiers.batcher import MicroBatcher, Overloaded
from classifiers.guardllm.generation import Generation, GuardLLMError, Prompt, TokenChoice

__all__ = ["LocalBackend"]

Dtype = Literal["float32", "bfloat16", "float16", "auto"]
_TOP = 10


@functools.cache
def _model(directory: str, dtype: Dtype) -> Any:
    """One loaded copy per process of each model: several policies (routes, tenants) naming
    the same guard model share its gigabytes. (Each backend has its own tokenizer: a fast
    tokenizer is not safe to share between the batchers' threads.)"""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model: Any = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=torch_dtype)
    model.eval()  # inference only: no dropout
    return model


def _tokenizer(directory: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class LocalBackend:
    """Implements :class:`~classifiers.guardllm.generation.Backend` with a local causal LM."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str,
        max_new_tokens: int,
        max_batch: int = 8,
        max_queue: int = 256,
        threads: int | None = None,
        dtype: Dtype = "float32",
    ) -> None:
        import torch
        from transformers import GenerationConfig

        if threads:
            torch.set_num_threads(threads)
        self._tokenizer = _tokenizer(str(directory))
        self._model = _model(str(directory), dtype)
        eos = self._model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        eos_ids.add(self._tokenizer.eos_token_id)
        self._eos = {int(i) for i in eos_ids if i is not None}
        # A fresh config: the model's own may ask for sampling (temperature, top_p), and a guard's
        # verdict must be the greedy one.
        self._config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=sorted(self._eos),
            pad_token_id=self._tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
        self._batcher: MicroBatcher[Generation] = MicroBatcher(
            self._predict, name=name, max_batch=max_batch, max_queue=max_queue
        )

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    async def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        encoded = [
            json.dumps({"messages": p.messages, "kwargs": dict(p.template_kwargs), "text": p.text})
            for p in prompts
        ]
        try:
            return await self._batcher.run(encoded)
        except (Overloaded, GuardLLMError):
            raise
        except Exception as exc:
            raise GuardLLMError(f"model error: {type(exc).__name__}: {str(exc)[:200]}") from exc

    async def aclose(self) -> None:
        await self._batcher.aclose()

    def token_ids(self, encoded: str) -> list[int]:
        """The prompt's token ids: the chat template's rendering, or the raw text's encoding."""
        prompt = json.loads(encoded)
        if prompt["messages"] is None:
            ids = self._tokenizer(prompt["text"], add_special_tokens=True)["input_ids"]
        else:
            ids = self._tokenizer.apply_chat_template(
                prompt["messages"], add_generation_prompt=True, tokenize=True, return_dict=False,
                sanitize_control_tokens=True, **prompt["kwargs"],
            )  # fmt: skip
        return [int(i) for i in ids]

    def _predict(self, encoded: list[str]) -> list[Generation]:
        import torch

        batch = self._tokenizer.pad(
            {"input_ids": [self.token_ids(e) for e in encoded]}, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self._model.generate(**batch, generation_config=self._config)
        new = out.sequences[:, batch["input_ids"].shape[1] :].tolist()
        probs = torch.softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
        top_p, top_i = probs.topk(min(_TOP, probs.shape[-1]), dim=-1)
        return [self._generation(new[r], top_p[r].tolist(), top_i[r].tolist()) for r in range(len(new))]

    def _generation(self, ids: list[int], top_p: list[list[float]], top_i: list[list[int]]) -> Generation:
        end = next((step for step, i in enumerate(ids) if i in self._eos), len(ids))
        tokens = []
        for step in range(end):
            top: dict[str, float] = {}
            for p, i in zip(top_p[step], top_i[step], strict=True):
                piece = self._tokenizer.decode([i])
                top[piece] = top.get(piece, 0.0) + p
            tokens.append(TokenChoice(self._tokenizer.decode([ids[step]]), top))
        text = self._tokenizer.decode(ids[:end], skip_special_tokens=True)
        return Generation(text, tuple(tokens))
