"""The ``MODELS`` registry and the three ways to get a model: registry name, checkpoint, entry point.

* ``--model NAME``: a registered model built from its default config (or ``config=``).
* ``--checkpoint PATH``: a genbench checkpoint (``harness.checkpoint``) names its model and config;
  the model is built from the registry and the state dict loaded strictly.
* ``--entry module:factory`` (or ``path/to/file.py:factory``): any user code that returns an
  object implementing at least one capability protocol. Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from harness.core.entries import ModelEntry
from harness.core.protocols import capabilities
from harness.core.registry import Registry


# Trainable baselines: each module lists its ModelEntry objects in a ``REGISTRY`` tuple.
# They are imported the first time MODELS is read, so a baseline module may import this one.
BASELINE_MODULES: tuple[str, ...] = (
    "baselines.vae", "baselines.gan", "baselines.realnvp", "baselines.pixelcnn",
    "baselines.ddpm", "baselines.score_sde", "baselines.flow_matching", "baselines.reference_samplers",
    "baselines.autoregressive_flow", "baselines.rbm", "baselines.vqvae", "baselines.score_matching",
    "baselines.ncp_vae", "baselines.interpolant", "baselines.cnf", "baselines.consistency",
    "baselines.d3pm", "baselines.latent_diffusion", "baselines.guidance",
)


def _load_baselines() -> None:
    for module in BASELINE_MODULES:
        for entry in importlib.import_module(module).REGISTRY:
            register_model(entry)


MODELS: Registry[ModelEntry] = Registry("model", loader=_load_baselines)

for _entry in (
    ModelEntry("affine-flow", "flow", "baselines.analytic:AffineFlow",
               "x = a*z + b with z ~ N(0, I): exact log-density (closed-form reference); --model-arg dim=D",
               example_config={"dim": 2}),
    ModelEntry("linear-gaussian-vae", "vae", "baselines.analytic:LinearGaussianVAE",
               "linear-Gaussian VAE whose log p(x) is exact: ELBO/IWAE checks; --model-arg data_dim=D latent_dim=Z",
               example_config={"data_dim": 4, "latent_dim": 2}),
    ModelEntry("uniform-categorical", "autoregressive", "baselines.analytic:UniformCategorical",
               "uniform categorical over pixel levels: exactly log2(K) bits/dim; --model-arg shape=[C,H,W]",
               example_config={"shape": [1, 8, 8]}),
    ModelEntry("gaussian-vp", "diffusion", "baselines.analytic:GaussianVPFlow",
               "exact VP-SDE probability flow of the data set gaussian-<dim>: PF-ODE bits/dim equal the truth",
               example_config={"dim": 2}),
    ModelEntry("diffusers-unet", "diffusion", "harness.adapters.diffusers_unet:load_diffusers_unet",
               "a diffusers UNet2DModel + scheduler saved with save_pretrained (--model-arg path=DIR); needs genbench[diffusers]"),
):
    MODELS.register(_entry.name, _entry, description=f"[{_entry.family}] {_entry.description}")


def register_model(entry: ModelEntry) -> None:
    """Add a model to the registry (baseline modules are listed in BASELINE_MODULES instead)."""
    MODELS.register(entry.name, entry, description=f"[{entry.family}] {entry.description}")


def build_registered(name: str, config: dict[str, Any] | None = None) -> Any:
    """Build the registered model ``name``; unknown config keys are reported with the known ones."""
    entry = MODELS.get(name)
    try:
        return entry.build(config)
    except TypeError as err:
        accepted = _accepted_keys(entry, str(err))
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        close = difflib.get_close_matches(unknown.group(1), accepted, n=1) if unknown else []
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"cannot build model {name!r} from config {config}: {err}.{hint} Accepted keys: {accepted}") from None


def _accepted_keys(entry: ModelEntry, message: str) -> list[str]:
    """The config keys ``entry``'s factory accepts: its named parameters, or, for a ``**config``
    factory, the fields of the config dataclass named in ``message`` (``VAEConfig.__init__() got ...``)."""
    module_name, _, attr = entry.factory.partition(":")
    module = importlib.import_module(module_name)
    params = inspect.signature(getattr(module, attr)).parameters.values()
    named = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    owner = re.match(r"(\w+)\.__init__\(\)", message)
    cls = getattr(module, owner.group(1), None) if owner else None
    if any(p.kind is p.VAR_KEYWORD for p in params) and cls is not None and dataclasses.is_dataclass(cls):
        return sorted({*named, *(f.name for f in dataclasses.fields(cls))})
    return named


def load_entry_point(target: str, **kwargs: Any) -> Any:
    """Import ``module:factory`` or ``file.py:factory``, call it, and check the result has a capability."""
    module_ref, sep, attr = target.rpartition(":")
    if not sep or not module_ref or not attr:
        raise ValueError(f"--entry {target!r} must look like 'package.module:factory' or 'path/to/file.py:factory'")
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_file():
            raise FileNotFoundError(f"--entry file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"genbench_entry_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ModuleNotFoundError as err:
            raise ValueError(f"--entry: cannot import module {module_ref!r} ({err}); is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"--entry: {module_ref!r} has no callable {attr!r}")
    model = factory(**kwargs)
    if not capabilities(model):
        raise TypeError(
            f"--entry {target!r} returned a {type(model).__name__}, which implements none of the capability "
            "protocols (Sampler, LogLikelihood, LowerBound, Encoder, ProbabilityFlow); see harness.core.protocols"
        )
    return model
