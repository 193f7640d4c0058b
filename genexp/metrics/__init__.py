"""Sample-quality metrics on the features of a pluggable extractor: FID, KID, precision/recall."""
