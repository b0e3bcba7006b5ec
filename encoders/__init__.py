"""Frozen item encoders (text, image, price): torch and scikit-learn code that turns item
content into fixed vectors, independent of the recommender and of the warehouse."""
