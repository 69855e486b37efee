"""Every field of the eval configs has its command-line flag, with the field's default."""

import dataclasses

import pytest

from harness.cli import build_parser, main
from harness.cli.options import field_help
from harness.core.options import SUBCONFIGS, ModelMetricOptions, SampleMetricOptions
from harness.eval_samples import SampleEvalConfig
from harness.runner import ModelEvalConfig

# fields whose flag has another shape: KEY=VALUE lists, --no-cache, a comma list, the source group
SPECIAL = {"model_args", "sample_options", "use_cache", "metrics", "replicates", "checkpoint", "entry", "model"}


def _defaults(argv: list[str]) -> dict:
    return vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("cls, argv", [
    (ModelEvalConfig, ["eval", "--model", "affine-flow", "--dataset", "gaussian-2-test"]),
    (SampleEvalConfig, ["eval-samples", "--samples", "moons-test", "--reference", "moons-train"]),
])
def test_each_config_field_has_a_flag_with_its_default(cls, argv):
    parsed = _defaults(argv)
    for f in dataclasses.fields(cls):
        if f.name in SPECIAL or f.name in ("dataset", "samples", "reference"):
            continue
        if f.name in SUBCONFIGS:
            for sub in dataclasses.fields(SUBCONFIGS[f.name]):
                assert sub.name in parsed, f"--{sub.name.replace('_', '-')} missing from {argv[0]}"
                assert parsed[sub.name] == sub.default, sub.name
            continue
        assert f.name in parsed, f"--{f.name.replace('_', '-')} missing from {argv[0]}"
        assert parsed[f.name] == f.default, f.name


def test_sub_config_fields_all_have_help():
    for cls in (SampleMetricOptions, ModelMetricOptions):
        helps = field_help(cls)
        assert set(helps) >= {f.name for f in dataclasses.fields(cls)}, cls.__name__
        assert all(len(text) > 10 for text in helps.values())


def test_flat_and_nested_options_build_the_same_config():
    flat = ModelEvalConfig.from_dict({"dataset": "d", "model": "m", "ode_rtol": 1e-3, "kid_subsets": 7})
    nested = ModelEvalConfig.from_dict({"dataset": "d", "model": "m", "model_metrics": {"ode_rtol": 1e-3},
                                        "sample_metrics": {"kid_subsets": 7}})
    assert flat == nested and flat.model_metrics.ode_rtol == 1e-3 and flat.sample_metrics.kid_subsets == 7
    with pytest.raises(ValueError, match="given twice"):
        ModelEvalConfig.from_dict({"dataset": "d", "model": "m", "ode_rtol": 1e-3, "model_metrics": {"ode_rtol": 1e-4}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['ode_tol'\]"):
        ModelEvalConfig.from_dict({"dataset": "d", "model": "m", "ode_tol": 1e-3})
    assert ModelEvalConfig.from_dict({"dataset": "d", "model": "m", "bootstrap": 0}).replicates == 0


def test_kid_and_knn_options_reach_the_record_from_eval(tmp_path):
    from harness.store.records import read_record

    out = tmp_path / "r.json"
    assert main(["eval", "--model", "affine-flow", "--model-arg", "dim=2", "--dataset", "gaussian-2-test",
                 "--metrics", "kid,prdc,nfe", "--num-samples", "60", "--kid-subsets", "3", "--pr-nearest-k", "4",
                 "--replicates", "0", "--json", str(out), "--quiet"]) == 0
    record = read_record(out)
    assert record["metrics"]["kid_mean"]["subsets"] == 3 and record["metrics"]["precision"]["nearest_k"] == 4
    assert record["config"]["sample_metrics"]["kid_subsets"] == 3
    # affine-flow samples without a network and declares it: NFE 0, said to be declared, and the throughput
    assert record["metrics"]["nfe_mean"]["value"] == 0 and record["metrics"]["nfe_mean"]["declared"] == 0
    assert record["metrics"]["samples_per_s"]["value"] > 0 and "nfe" not in record["skipped"]


class _NoNet:
    """A sampler whose network the harness cannot see (no `net` module) and that declares no NFE."""

    def __init__(self):
        from harness.core.protocols import DataSpec

        self.data_spec = DataSpec((2,), "continuous")

    def sample(self, n, rng):
        return rng.normal((2,))


def no_net_model():
    return _NoNet()


def test_a_requested_metric_that_can_run_only_in_part_is_an_error_before_sampling(tmp_path, capsys, monkeypatch):
    import harness.runner as runner
    from harness.store.records import read_record

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before refusing the request")

    entry = f"{__name__}:no_net_model"
    with monkeypatch.context() as m:
        m.setattr(runner, "draw_samples", no_sampling)
        assert main(["eval", "--entry", entry, "--dataset", "gaussian-2-test", "--metrics", "nfe",
                     "--num-samples", "20", "--json", str(tmp_path / "x.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "metric 'nfe' cannot run in full on _NoNet" in err and "model.net" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
    # unrequested (the default set), it runs in part: the throughput, and the reason NFE is missing
    out = tmp_path / "d.json"
    assert main(["eval", "--entry", entry, "--dataset", "gaussian-2-test", "--num-samples", "20", "--replicates", "0",
                 "--feature-extractor", "identity", "--json", str(out), "--quiet"]) == 0
    record = read_record(out)
    assert "samples_per_s" in record["metrics"] and "nfe_mean" not in record["metrics"]
    assert "nfe_per_sample" in record["skipped"]["nfe"]


def test_the_parser_and_help_import_no_torch_and_no_metric_module():
    """`genbench --help` (and every subcommand's --help) builds the parser only: torch and the metric
    modules are imported by the command that runs (measured: 0.3 s and 32 MB for --help on 2 cores)."""
    import subprocess
    import sys

    code = ("import sys; from harness.cli import build_parser; p = build_parser(); "
            "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('metrics.', 'baselines.'))); "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
