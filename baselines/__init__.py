"""Reference implementations of generative model families."""
