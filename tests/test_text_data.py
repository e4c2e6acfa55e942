from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sweep.problems.sources import TextCorpus, decode, resolve_files


def write_docs(tmp_path: Path, texts: list[str]) -> Path:
    for i, text in enumerate(texts):
        (tmp_path / f"doc{i}.txt").write_text(text)
    return tmp_path


def test_builtin_corpus_splits_by_story() -> None:
    c = TextCorpus("builtin:tales", block_size=64, test_fraction=0.1)
    train, test = c.train_blocks(), c.test_blocks()
    assert train.shape[1] == test.shape[1] == 64 and train.dtype == np.int64
    assert len(test) > 100 and len(train) > 5 * len(test)
    assert c.vocab_size == 256 and train.min() > 0 and train.max() < 128  # ASCII, no EOS
    assert c.documents == 600


def test_held_out_documents_never_reach_the_train_split(tmp_path: Path) -> None:
    letters = "abcdefghijklmnopqrst"
    write_docs(tmp_path, [ch * 100 for ch in letters])  # one letter per document
    c = TextCorpus(tmp_path, block_size=25, test_fraction=0.25, seed=3)
    train, test = set(c.train_blocks().ravel()), set(c.test_blocks().ravel())
    assert len(test) == 5 and len(train) == 15 and not train & test
    other = TextCorpus(tmp_path, block_size=25, test_fraction=0.25, seed=4)
    assert set(other.test_blocks().ravel()) != test  # the split follows the seed


def test_the_shipped_corpus_is_what_the_generator_writes(tmp_path: Path) -> None:
    shipped = resolve_files("builtin:tales")[0]
    # A script beside the data, not a package module: load it by path.
    spec = importlib.util.spec_from_file_location("make_corpus", shipped.with_name("make_corpus.py"))
    make_corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_corpus)
    make_corpus.main(tmp_path / "tales.txt")
    assert (tmp_path / "tales.txt").read_bytes() == shipped.read_bytes()
    assert 100_000 < shipped.stat().st_size < 300_000


def test_directory_and_glob_give_one_document_per_file(tmp_path: Path) -> None:
    write_docs(tmp_path, ["a" * 100, "b" * 100, "c" * 30, "d" * 250])
    by_dir = TextCorpus(tmp_path, block_size=50, test_fraction=0.3, seed=0)
    by_glob = TextCorpus(str(tmp_path / "*.txt"), block_size=50, test_fraction=0.3, seed=0)
    assert by_dir.documents == 3  # the 30-byte file is shorter than a block
    np.testing.assert_array_equal(by_dir.train_blocks(), by_glob.train_blocks())
    assert len(by_dir.train_blocks()) + len(by_dir.test_blocks()) == 2 + 2 + 5


def test_one_file_is_split_into_paragraphs(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("\n\n".join(f"paragraph {i} " * 10 for i in range(20)))
    c = TextCorpus(tmp_path / "one.txt", block_size=32, test_fraction=0.2)
    assert c.documents == 20 and len(c.test_blocks()) > 0


def test_sample_real_draws_training_blocks() -> None:
    c = TextCorpus("builtin:tales", block_size=32)
    x = c.sample_real(10, np.random.default_rng(0))
    train = {tuple(r) for r in c.train_blocks()}
    assert x.shape == (10, 32) and all(tuple(r) in train for r in x)
    np.testing.assert_array_equal(x, c.sample_real(10, np.random.default_rng(0)))


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(ValueError, match="empty"):
        TextCorpus(tmp_path / "empty.txt")


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        TextCorpus(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="builtin:tales"):
        TextCorpus("builtin:nope")
    with pytest.raises(ValueError, match="matches no files"):
        TextCorpus(str(tmp_path / "*.md"))


def test_block_longer_than_every_document_is_an_error(tmp_path: Path) -> None:
    write_docs(tmp_path, ["short one", "short two"])
    with pytest.raises(ValueError, match="longer than every document"):
        TextCorpus(tmp_path, block_size=64)


def test_decode_stops_at_eos() -> None:
    assert decode(np.array([[72, 105, 0, 65]])) == ["Hi"]
