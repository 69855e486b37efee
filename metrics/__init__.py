"""genbench metrics: feature extractors and pure metric math (one metric per file)."""
