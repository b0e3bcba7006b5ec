"""The public Amazon review releases: category names, file paths and domain names.

Base URLs are never hard-wired into callers: they come from the config (and the
`ANT_AMAZON_2018_URL` / `ANT_AMAZON_2023_URL` environment variables), so a mirror, a
local directory or a test server can stand in for the public hosts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Release = Literal["2018", "2023"]
ReviewSet = Literal["5core", "all"]

DEFAULT_BASE_URLS: dict[str, str] = {
    "2018": "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/",
    "2023": "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/",
}

CATEGORIES: dict[str, tuple[str, ...]] = {
    "2018": (
        "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive",
        "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry",
        "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
        "Home_and_Kitchen", "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty",
        "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments", "Office_Products",
        "Patio_Lawn_and_Garden", "Pet_Supplies", "Prime_Pantry", "Software",
        "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games",
    ),
    "2023": (
        "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive",
        "Baby_Products", "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl",
        "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
        "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Handmade_Products",
        "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen",
        "Industrial_and_Scientific", "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV",
        "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies",
        "Software", "Sports_and_Outdoors", "Subscription_Boxes", "Tools_and_Home_Improvement",
        "Toys_and_Games", "Video_Games",
    ),
}

_REVIEW_PATHS = {
    ("2018", "5core"): "categoryFilesSmall/{cat}_5.json.gz",
    ("2018", "all"): "categoryFiles/{cat}.json.gz",
    ("2023", "5core"): "raw/review_categories/{cat}.jsonl.gz",
    ("2023", "all"): "raw/review_categories/{cat}.jsonl.gz",
}
_META_PATHS = {
    "2018": "metaFiles2/meta_{cat}.json.gz",
    "2023": "raw/meta_categories/meta_{cat}.jsonl.gz",
}


class UnknownCategory(ValueError):
    """A category name that the chosen release does not publish."""


@dataclass(frozen=True)
class SourceFile:
    """One file to download: `kind` is "reviews" or "meta", `path` is relative to the base URL."""

    release: str
    category: str
    kind: Literal["reviews", "meta"]
    path: str

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + "/" + self.path


def check_categories(release: str, categories: list[str]) -> None:
    """Fail before any download if a name is not a category of `release`."""
    valid = CATEGORIES[release]
    unknown = [c for c in categories if c not in valid]
    if unknown:
        raise UnknownCategory(
            f"unknown Amazon {release} categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; valid names for {release} are: {', '.join(valid)}"
        )


def source_files(release: str, category: str, reviews: ReviewSet = "5core") -> list[SourceFile]:
    check_categories(release, [category])
    return [
        SourceFile(release, category, "reviews", _REVIEW_PATHS[(release, reviews)].format(cat=category)),
        SourceFile(release, category, "meta", _META_PATHS[release].format(cat=category)),
    ]


def domain_name(release: str, category: str) -> str:
    """Warehouse domain key: the category for 2018 (the paper's release), `<cat>_2023` for 2023,
    so that both releases of one category can live side by side in one warehouse."""
    return category if release == "2018" else f"{category}_2023"
