"""Tiny random-weight transformers models, built at test time (CI downloads nothing).

The tokenizer is a character-level WordPiece over ASCII letters, digits and a few hundred CJK
characters, so Chinese and English texts both tokenise to real ids.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

LABELS = ("safe", "toxic", "hate")
_CJK = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400)) + "你好今天气很炸药配方怎么杀进程歧视女人河南"


def _tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation + _CJK))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512,
    )  # fmt: skip
    fast.save_pretrained(directory)


def _config(num_labels: int = 0) -> dict[str, object]:
    return {
        "vocab_size": 5 + 2 * len(set(string.ascii_lowercase + string.digits + string.punctuation + _CJK)),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }


def sequence_classifier(directory: Path, *, multi_label: bool = True, seed: int = 0) -> Path:
    """A BertForSequenceClassification directory with labels ``LABELS``."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        **_config(),  # type: ignore[arg-type]
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    _tokenizer(directory)
    return directory


def encoder_with_head(
    directory: Path,
    *,
    labels: tuple[str, ...] = LABELS,
    label_map: Mapping[str, object] | None = None,
    seed: int = 0,
    layers: tuple[int, ...] = (-1,),
) -> Path:
    """A BertModel encoder and a head (``head.json`` + ``head.safetensors``) in one directory;
    the head reads the mean-pooled states of ``layers``."""
    from transformers import BertConfig, BertModel

    from classifiers.hf import HeadSpec, build_head

    torch.manual_seed(seed)
    BertModel(BertConfig(**_config())).eval().save_pretrained(directory)  # type: ignore[arg-type]
    _tokenizer(directory)
    spec = HeadSpec(labels=labels, hidden=(16,), prefix="query: ", layers=layers)
    head = build_head(32 * len(layers), spec)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(directory / "head.safetensors"))
    raw = {
        "labels": list(labels),
        "hidden": [16],
        "prefix": "query: ",
        "pooling": "mean",
        "layers": list(layers),
        "revision": "tiny-1",
    }
    if label_map is not None:
        raw["label_map"] = label_map
    (directory / "head.json").write_text(json.dumps(raw), encoding="utf-8")
    return directory


#: Whole-word tokens of the guard models' answers (a leading space or newline is part of the word,
#: as in byte-level BPE, so that no token repeats within one scripted answer).
GUARD_WORDS = (
    "safe", "unsafe", "\n", "\n\n", ",", *(f"S{i}" for i in range(1, 15)),
    "Safety:", " Safe", " Unsafe", " Controversial", "\nCategories:", " Violent", " Jailbreak", " PII",
    " None", "\nRefusal:", " Yes", " No", "Yes", "No",
)  # fmt: skip
GUARD_CHAT_TEMPLATE = (
    "{%- for m in messages -%}<|{{ m['role'] }}|>"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for part in m['content'] -%}{{ part['text'] }}{%- endfor -%}{%- endif -%}<|end|>"
    "{%- endfor -%}"
    "{%- if guideline is defined -%}<|system|>{{ guideline }}<|end|>{%- endif -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def _guard_tokenizer(directory: Path) -> list[str]:
    """A WordPiece tokenizer: the guard words whole, anything else by characters (English and
    Chinese); a Jinja chat template that also takes ShieldGemma's ``guideline``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n" + _CJK))
    vocab = list(dict.fromkeys([*specials, *GUARD_WORDS, *chars, *(f"##{c}" for c in chars)]))
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    pieces = r"\n*[A-Za-z]+:| ?[A-Za-z0-9]+|[\u4e00-\u9fff]|\n+|\s|[^\sA-Za-z0-9]"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pieces), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace("##", ""), decoders.Fuse()])
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        model_max_length=4096,
    )  # fmt: skip
    fast.chat_template = GUARD_CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return vocab


def causal_guard_lm(
    directory: Path, answer: tuple[str, ...], alternatives: Mapping[int, Mapping[str, float]] | None = None
) -> Path:
    """A LlamaForCausalLM that answers every prompt with ``answer`` (a sequence of distinct
    ``GUARD_WORDS``), then ``</s>``. At step ``i`` the chosen word has probability
    ``1 - sum(alternatives[i].values())`` and each alternative word its own.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's
    embedding: a bigram model. Every token outside the answer embeds as one-hot 0 (the state
    "prompt read"), the answer's ``i``-th word as one-hot ``i + 1``; the final norm maps one-hots
    to unit vectors, so ``lm_head`` column ``j`` holds the log-probabilities after state ``j``.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if len(set(answer)) != len(answer) or not set(answer) <= set(GUARD_WORDS):
        raise ValueError("answer words must be distinct GUARD_WORDS")
    vocab = _guard_tokenizer(directory)
    ids = {t: i for i, t in enumerate(vocab)}
    hidden = 32
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
        pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = torch.zeros(len(vocab), hidden)
        embed[:, 0] = 1.0
        for i, word in enumerate(answer):
            embed[ids[word]] = 0.0
            embed[ids[word], i + 1] = 1.0
        model.model.embed_tokens.weight.copy_(embed)
        model.model.norm.weight.fill_(hidden**-0.5)
        head = torch.full((len(vocab), hidden), -40.0)
        for step, word in enumerate((*answer, "</s>")):
            others = dict((alternatives or {}).get(step, {}))
            head[ids[word], step] = float(torch.log(torch.tensor(1.0 - sum(others.values()))))
            for other, p in others.items():
                head[ids[other], step] = float(torch.log(torch.tensor(p)))
        model.lm_head.weight.copy_(head)
    model.save_pretrained(directory)
    return directory
