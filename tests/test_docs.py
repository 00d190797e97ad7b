"""The generated documents match the code, and the README stays short and local."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_learner import docgen

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(docgen.GENERATED))
def test_generated_doc_is_current(name: str) -> None:
    committed = (ROOT / "docs" / name).read_text()
    assert committed == docgen.GENERATED[name](), (
        f"docs/{name} is stale: run `python -m stream_learner.docgen`")


def test_every_setting_and_metric_is_documented() -> None:
    config = (ROOT / "docs" / "configuration.md").read_text()
    for name, env, _, _ in docgen.describe_settings():
        assert f"`{name}`" in config and f"`{env}`" in config
    metrics = (ROOT / "docs" / "metrics.md").read_text()
    for needed in ("stream_learner_events_rejected_total", "stream_learner_consumer_lag",
                   "stream_learner_worker_process_resident_memory_bytes"):
        assert f"`{needed}`" in metrics


def test_readme_is_short_and_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "DESIGN.md" not in text, f"{doc.name} cites a file outside the repository"
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
