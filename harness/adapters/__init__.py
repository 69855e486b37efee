"""Adapters: wrap third-party model formats as genbench capability protocols (``harness.core.protocols``).

Each adapter imports its third-party library inside functions only, so importing ``harness`` never
needs the optional extras. Available adapters:

* ``harness.adapters.diffusers_unet:load_diffusers_unet``: a diffusers ``UNet2DModel`` + noise
  scheduler saved with ``save_pretrained`` (Sampler + ProbabilityFlow); needs ``pip install diffusers``.
"""
