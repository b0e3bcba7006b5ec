"""The public Amazon review releases: their category names, default hosts and how a category
names its warehouse domain. Plain data, so the config can validate names without importing
the warehouse."""
from __future__ import annotations

import re

from ant_config.errors import UserError

DEFAULT_BASE_URLS: dict[str, str] = {
    "2014": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/",
    "2018": "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/",
    "2023": "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/",
}

CATEGORIES: dict[str, tuple[str, ...]] = {
    # The 2014 release's 24 categories with a 5-core review file (McAuley et al., SIGIR 2015)
    "2014": (
        "Amazon_Instant_Video", "Apps_for_Android", "Automotive", "Baby", "Beauty", "Books",
        "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
        "Electronics", "Grocery_and_Gourmet_Food", "Health_and_Personal_Care", "Home_and_Kitchen",
        "Kindle_Store", "Movies_and_TV", "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden",
        "Pet_Supplies", "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games",
    ),
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



class UnknownCategory(UserError, ValueError):
    """A category name that the chosen release does not publish."""


# A domain name becomes a folder name (warehouse tables, model artifacts, exported files): ASCII
# letters, digits, '_' and '-', not starting with '-' (it would read as an option), bounded.
DOMAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}")


class BadName(UserError, ValueError):
    """A domain or target name that could not safely name a folder."""


def check_name(name: str, what: str = "domain") -> str:
    """`name` when it is a valid domain name (see DOMAIN_NAME); else BadName saying why."""
    if not isinstance(name, str) or not DOMAIN_NAME.fullmatch(name):
        raise BadName(f"{what} name {name!r} is not allowed: use 1 to 100 ASCII letters, digits, '_' or '-', "
                      f"not starting with '-' (a name becomes a folder name)")
    return name


def check_categories(release: str, categories: list[str]) -> None:
    """Fail before any download if a name is not a category of `release`."""
    valid = CATEGORIES[release]
    unknown = [c for c in categories if c not in valid]
    if unknown:
        raise UnknownCategory(
            f"unknown Amazon {release} categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; valid names for {release} are: {', '.join(valid)}"
        )


def domain_name(release: str, category: str) -> str:
    """Warehouse domain key: the category for 2018 (the paper's release), `<cat>_2014` and
    `<cat>_2023` for the others, so that every release of a category can live side by side in
    one warehouse."""
    return category if release == "2018" else f"{category}_{release}"
