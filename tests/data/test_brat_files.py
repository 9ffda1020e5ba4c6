"""Reading and writing brat folders: recursion, spaces in names, byte-exact text."""
import pytest

from spacy_softprompt.data.brat import (
    BratDocument,
    Entity,
    find_brat_files,
    read_brat_dir,
    read_brat_file,
    write_brat_document,
)
from spacy_softprompt.data.errors import BratError, IssueCollector

TEXT = "Line one\r\nInterferon alfacon-1 was given.\r\n"


def make_corpus(root):
    (root / "sub dir").mkdir()
    for folder, name in ((root, "Interferon alfacon-1"), (root / "sub dir", "Methyl aminolevulinate")):
        (folder / f"{name}.txt").write_bytes(TEXT.encode("utf-8"))
        start = TEXT.index("Interferon")
        (folder / f"{name}.ann").write_text(f"T1\tDRUG {start} {start + 20}\tInterferon alfacon-1\n", encoding="utf-8")


def test_read_dir_flat_and_recursive(tmp_path):
    make_corpus(tmp_path)
    flat = read_brat_dir(tmp_path, strict=True)
    assert [d.doc_id for d in flat] == ["Interferon alfacon-1"]
    deep = read_brat_dir(tmp_path, recursive=True, strict=True)
    assert [d.doc_id for d in deep] == ["Interferon alfacon-1", "sub dir/Methyl aminolevulinate"]
    assert all(d.entities[0].start == 10 for d in deep)  # the \r counts
    assert deep[1].source.endswith("sub dir/Methyl aminolevulinate.ann")


def test_find_files_sorted(tmp_path):
    make_corpus(tmp_path)
    names = [p.name for p in find_brat_files(tmp_path, recursive=True)]
    assert names == ["Interferon alfacon-1.txt", "Methyl aminolevulinate.txt"]


def test_write_is_byte_exact_and_rereads(tmp_path):
    make_corpus(tmp_path)
    doc = read_brat_file(tmp_path / "Interferon alfacon-1.txt", strict=True)
    out = write_brat_document(doc, tmp_path / "out")
    assert out.name == "Interferon alfacon-1.txt"
    assert out.read_bytes() == TEXT.encode("utf-8")
    again = read_brat_file(out, collector=IssueCollector(strict=True))
    assert again == doc


def test_write_into_subfolders_and_refuse_escapes(tmp_path):
    doc = BratDocument("abc", doc_id="a/b c", entities=[Entity("T1", "X", [(0, 3)])])
    path = write_brat_document(doc, tmp_path)
    assert path == tmp_path / "a" / "b c.txt"
    assert (tmp_path / "a" / "b c.ann").read_text(encoding="utf-8") == "T1\tX 0 3\tabc\n"
    with pytest.raises(BratError):
        write_brat_document(doc, tmp_path, name="../evil")
    with pytest.raises(BratError):
        write_brat_document(BratDocument("abc"), tmp_path)
