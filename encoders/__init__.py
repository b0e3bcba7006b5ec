"""Frozen item encoders (text, image, price): torch and scikit-learn code that turns item
content into fixed vectors, independent of the recommender and of the warehouse."""

import ant_config  # noqa: E402,F401 - before any torch import: it sets OpenMP's wait policy
