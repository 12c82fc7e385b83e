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
