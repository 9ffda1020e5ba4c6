"""Few-shot subsets: deterministic per seed, nested across k; dev splits."""
import pytest

from spacy_softprompt.study.data import (
    seeded_order,
    split_docbin,
    subsample,
    subsample_docbin,
    subsample_indices,
)


def test_subsample_is_deterministic_per_seed():
    assert subsample_indices(100, 10, seed=3) == subsample_indices(100, 10, seed=3)
    assert subsample_indices(100, 10, seed=3) != subsample_indices(100, 10, seed=4)
    assert seeded_order(50, 1) == seeded_order(50, 1)


def test_subsets_are_nested_for_the_same_seed():
    for seed in range(5):
        previous = set()
        for k in (5, 10, 20, 50):
            current = set(subsample_indices(132, k, seed))
            assert len(current) == k
            assert previous <= current, (seed, k)
            previous = current


def test_all_and_oversized_k_keep_every_document_in_order():
    items = list("abcdefg")
    assert subsample(items, None, 0) == items
    assert subsample(items, 50, 0) == items
    picked = subsample(items, 3, 0)
    assert picked == sorted(picked, key=items.index)  # corpus order kept
    with pytest.raises(ValueError):
        subsample_indices(10, 0, 0)


def test_subsample_docbin_keeps_relations(toy_corpus, tmp_path):
    from spacy_softprompt.data.readers import load_docbin

    n_docs, n_words = subsample_docbin(toy_corpus, tmp_path / "k2.spacy", 2, seed=0)
    docs = load_docbin(tmp_path / "k2.spacy")
    assert n_docs == len(docs) == 2 and n_words == sum(len(d) for d in docs)
    assert all(doc._.relations and len(doc.spans["entities"]) == 3 for doc in docs)
    subsample_docbin(toy_corpus, tmp_path / "again.spacy", 2, seed=0)
    assert [d.text for d in load_docbin(tmp_path / "again.spacy")] == [d.text for d in docs]


def test_split_is_disjoint_and_complete(toy_corpus, tmp_path):
    from spacy_softprompt.data.readers import load_docbin

    n_train, n_dev = split_docbin(toy_corpus, tmp_path / "train.spacy", tmp_path / "dev.spacy", n_dev=1, seed=0)
    train = [d.text for d in load_docbin(tmp_path / "train.spacy")]
    dev = [d.text for d in load_docbin(tmp_path / "dev.spacy")]
    assert (n_train, n_dev) == (2, 1) and not set(train) & set(dev)
    assert sorted(train + dev) == sorted(d.text for d in load_docbin(toy_corpus))
    with pytest.raises(ValueError):
        split_docbin(toy_corpus, tmp_path / "a.spacy", tmp_path / "b.spacy", n_dev=3)
