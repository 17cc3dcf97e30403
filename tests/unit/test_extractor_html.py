"""HTML to sections on the real pages of $DISTILLERY_TEST_DATA/data/web: main content only,
titled by the page's own headings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import BadInput
from services.extractor.html import read_html

SITE = Path("data/web/pattersonconsulting")


def page(test_data: Path, name: str) -> list:
    return read_html((test_data / SITE / name).read_bytes())


def text_of(sections: list) -> str:
    return " ".join(line.text for s in sections for line in s.lines)


def test_a_blog_post_keeps_every_heading_the_extractor_dropped(test_data: Path) -> None:
    sections = page(test_data, "blog/evolution_of_retrieval_augmented_generation_jan_2024.html")
    titles = [s.title for s in sections]
    assert titles[1:5] == [
        "Introduction",
        "What is Retrieval Augmented Generation?",
        "Retrieval",
        "Augmentation",
    ]
    assert titles[-1] == "Summary"
    intro = sections[1].lines[0].text
    assert intro.startswith("In 2023, enterprise CTOs acknowledged that Large Language Models")


def test_the_footer_and_the_table_of_contents_are_gone(test_data: Path) -> None:
    text = text_of(
        page(test_data, "blog/evolution_of_retrieval_augmented_generation_jan_2024.html")
    )
    assert "Follow us" not in text  # the footer's
    # The table of contents repeats the headings as links; headings are titles, not text.
    assert "Use of Data Catalogs for Dynamic Discovery" not in text


def test_a_company_page_is_split_at_its_headings(test_data: Path) -> None:
    sections = page(test_data, "about.html")
    titles = [s.title for s in sections]
    assert "The Story" in titles and "Josh Patterson" in titles
    story = next(s for s in sections if s.title == "The Story")
    assert story.lines[0].text.startswith("Patterson Consulting is a group of engineers")
    assert all(line.page is None for s in sections for line in s.lines)


@pytest.mark.parametrize(
    "data", [b"", b"<html><body><nav><a href='/'>Home</a></nav></body></html>"]
)
def test_a_page_without_main_content_says_so(data: bytes) -> None:
    with pytest.raises(BadInput) as caught:
        read_html(data)
    assert caught.value.reason == "no_content"
