"""Image interrogators: models that describe an image as prompt text (CLIP captions, DeepBooru tags)."""
