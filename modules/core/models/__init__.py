"""Model families, architecture inference and single-file checkpoint loading."""
