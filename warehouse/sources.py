"""Where a release keeps each category's files: review and metadata paths under a base URL.

Base URLs are never hard-wired into callers: they come from the config (and the
`ANT_AMAZON_2014_URL` / `ANT_AMAZON_2018_URL` / `ANT_AMAZON_2023_URL` environment variables), so a mirror, a
local directory or a test server can stand in for the public hosts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ant_config.releases import check_categories

ReviewSet = Literal["5core", "all"]

_REVIEW_PATHS = {
    ("2014", "5core"): "reviews_{cat}_5.json.gz",
    ("2014", "all"): "reviews_{cat}.json.gz",
    ("2018", "5core"): "categoryFilesSmall/{cat}_5.json.gz",
    ("2018", "all"): "categoryFiles/{cat}.json.gz",
    ("2023", "5core"): "raw/review_categories/{cat}.jsonl.gz",
    ("2023", "all"): "raw/review_categories/{cat}.jsonl.gz",
}
_META_PATHS = {
    "2014": "meta_{cat}.json.gz",
    "2018": "metaFiles2/meta_{cat}.json.gz",
    "2023": "raw/meta_categories/meta_{cat}.jsonl.gz",
}


@dataclass(frozen=True)
class SourceFile:
    """One file to download: `kind` is "reviews" or "meta", `path` is relative to the base URL."""

    release: str
    category: str
    kind: Literal["reviews", "meta"]
    path: str

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + "/" + self.path


def source_files(release: str, category: str, reviews: ReviewSet = "5core") -> list[SourceFile]:
    check_categories(release, [category])
    return [
        SourceFile(release, category, "reviews", _REVIEW_PATHS[(release, reviews)].format(cat=category)),
        SourceFile(release, category, "meta", _META_PATHS[release].format(cat=category)),
    ]
