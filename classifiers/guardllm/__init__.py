"""``type: guard-llm``: generative guard models (Llama Guard 3/4, Qwen3Guard-Gen, ShieldGemma, or
any model described by a template and an answer parser), local or on an OpenAI-compatible server.

Modules: :mod:`.categories` (the shipped category maps), :mod:`.families` and :mod:`.generic`
(prompts and answer parsing), :mod:`.generation` (prompts, answers, verdict probabilities),
:mod:`.local` and :mod:`.remote` (backends), :mod:`.params`, :mod:`.classifier`. Importing the
package loads neither torch nor transformers.
"""

from __future__ import annotations

from classifiers.guardllm.classifier import GuardLLMClassifier
from classifiers.guardllm.generation import GuardLLMError
from classifiers.guardllm.params import GuardLLMParams

__all__ = ["GuardLLMClassifier", "GuardLLMError", "GuardLLMParams"]
