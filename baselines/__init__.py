"""Reference implementations of generative model families (filled by later issues)."""
