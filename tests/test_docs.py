from __future__ import annotations

import re
from pathlib import Path

import hubtransfer as ht
from hubtransfer.registry import backbones_markdown

DOCS = Path(__file__).parents[1] / "docs"


def test_backbones_doc_matches_registry() -> None:
    text = (DOCS / "backbones.md").read_text()
    match = re.search(r"<!-- backbones:start -->\n(.*)<!-- backbones:end -->", text, re.S)
    assert match, "docs/backbones.md lost its generated-table markers"
    assert match.group(1) == backbones_markdown(), (
        "docs/backbones.md is stale: regenerate the table with `hubtransfer backbones --markdown`"
    )


def test_api_doc_mentions_every_public_name() -> None:
    text = (DOCS / "api.md").read_text()
    missing = [name for name in ht.__all__ if not name.startswith("_") and f"`{name}" not in text]
    assert not missing, f"docs/api.md does not document: {missing}"
