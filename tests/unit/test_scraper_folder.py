"""The folder source's checks: which directories a request may read, which files count."""

from __future__ import annotations

import pytest

from pipeline.errors import BadInput
from services.scraper.folder import check_allowed, documents

pytestmark = pytest.mark.unit


def test_any_folder_when_no_roots_are_set(tmp_path):
    check_allowed(tmp_path, [])


def test_a_folder_under_a_root_is_allowed(tmp_path):
    (tmp_path / "papers" / "2024").mkdir(parents=True)
    check_allowed((tmp_path / "papers" / "2024").resolve(), [str(tmp_path / "papers")])


@pytest.mark.parametrize("target", ["elsewhere", "papers/../elsewhere", "papers-old"])
def test_a_folder_outside_the_roots_is_refused(tmp_path, target):
    for name in ("papers", "elsewhere", "papers-old"):
        (tmp_path / name).mkdir()
    with pytest.raises(BadInput) as caught:
        check_allowed((tmp_path / target).resolve(), [str(tmp_path / "papers")])
    assert caught.value.reason == "folder_not_allowed"


def test_a_link_out_of_a_root_is_refused(tmp_path):
    (tmp_path / "papers").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "papers" / "escape").symlink_to(tmp_path / "secret")
    with pytest.raises(BadInput):
        check_allowed((tmp_path / "papers" / "escape").resolve(), [str(tmp_path / "papers")])


def test_documents_are_pdf_and_html_files_in_a_stable_order(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.PDF", "a.html", "c.htm", "notes.txt", "sub/d.pdf", "image.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in documents(tmp_path, recursive=False)] == ["a.html", "b.PDF", "c.htm"]
    assert [p.name for p in documents(tmp_path, recursive=True)] == [
        "a.html",
        "b.PDF",
        "c.htm",
        "d.pdf",
    ]


def test_missing_folder_or_a_file_is_bad_input(tmp_path):
    (tmp_path / "f.pdf").write_bytes(b"%PDF-1.7")
    for path, words in ((tmp_path / "nope", "does not exist"), (tmp_path / "f.pdf", "not a dir")):
        with pytest.raises(BadInput) as caught:
            documents(path, recursive=True)
        assert caught.value.reason == "no_such_folder" and words in str(caught.value)
