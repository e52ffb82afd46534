"""The image-repair service: schedule, RePaint plan and sampler, training, masks, weights, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mecsim.aigc import data, masks, weights
from mecsim.aigc.errors import AigcError
from mecsim.aigc.repair import DENOISE, RENOISE, Repairer, evaluations, repaint_plan, transitions
from mecsim.aigc.schedule import cosine, respace
from mecsim.aigc.train import TrainConfig, train

TINY = (8, 16)  # channels of a test-sized UNet


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("aigc") / "tiny.msgpack"
    result = train(
        TrainConfig(iterations=40, batch_size=16, channels=TINY, checkpoint_every=1000), out, progress=False
    )
    return result


def test_cosine_schedule_hand_computed():
    # f(t) = cos²(((t/4 + 0.008)/1.008)·π/2), ᾱ_t = f(t)/f(0), β_t = min(1 − f(t)/f(t−1), 0.999), T = 4
    s = cosine(4)
    betas = [0.152987838673, 0.416958087512, 0.707858712397, 0.999]
    np.testing.assert_allclose(s.betas, betas, rtol=1e-10)
    alpha_bar = [0.847012161327, 0.493843590441, 0.144272102386, 0.144272102386 * 0.001]  # the last β clipped
    np.testing.assert_allclose(s.alpha_bar, alpha_bar, rtol=1e-10)
    # posterior of the first step: x_{-1} is the clean image, so its mean is x̂0 and its variance 0
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_coef_x0[0] == pytest.approx(1.0)
    assert s.posterior_coef_xt[0] == pytest.approx(0.0)


def test_respace_keeps_marginals():
    full = cosine(1000)
    r = respace(full, 50)
    assert len(r) == 50 and r.timesteps[0] == 0 and r.timesteps[-1] == 999
    np.testing.assert_allclose(r.alpha_bar, full.alpha_bar[r.timesteps])
    np.testing.assert_allclose(np.cumprod(1 - r.betas), r.alpha_bar, rtol=1e-9)
    same = respace(full, 1000)
    np.testing.assert_allclose(same.betas, full.betas, rtol=1e-9)


def test_repaint_plan_hand_computed():
    # N = 10, j = 2, r = 2: from steps 6, 4, 2, 0 go back 2 steps once
    plan = repaint_plan(10, jump_length=2, resamples=2)
    expected = [9, 8, 7, 6, 7, 8, 7, 6, 5, 4, 5, 6, 5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    assert plan.tolist() == expected
    kind, step = transitions(plan)
    assert (kind == RENOISE).sum() == 8 and (kind == DENOISE).sum() == 18
    assert evaluations(10, 2, 2) == 18
    assert evaluations(100, 10, 1) == 100  # r = 1: plain replacement, N evaluations
    assert evaluations(100, 10, 5) == 100 + 9 * 4 * 10


def _reference_replacement(model, images, mask, steps, seed):
    """Replacement inpainting written out step by step, as a check on the compiled plan."""
    import jax
    import jax.numpy as jnp

    from mecsim.aigc.unet import UNet

    s = respace(cosine(model.diffusion_steps), steps)
    net = UNet(model.unet)
    x0, m = data.to_model(images), mask[..., None]
    k_start, k_steps = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(k_start, x0.shape)
    for n, i in enumerate(range(steps - 1, -1, -1)):
        k_gen, k_known = jax.random.split(jax.random.fold_in(k_steps, n))
        eps = net.apply({"params": model.params}, x, jnp.full((x.shape[0],), float(s.timesteps[i])))
        x0_hat = jnp.clip((x - np.sqrt(1 - s.alpha_bar[i]) * eps) / np.sqrt(s.alpha_bar[i]), -1, 1)
        unknown = s.posterior_coef_x0[i] * x0_hat + s.posterior_coef_xt[i] * x
        unknown = unknown + np.sqrt(s.posterior_variance[i]) * jax.random.normal(k_gen, x.shape)
        ab_prev = s.alpha_bar_prev[i]
        known = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * jax.random.normal(k_known, x.shape)
        x = m * known + (1 - m) * unknown
    return data.from_model(x)


def test_repaint_with_one_resample_is_replacement(tiny_model):
    model = tiny_model.model
    images = data.load("digits", "held-out").images[:3]
    mask = masks.make("centre", 3, 16)
    r = Repairer(model)
    one = r.repair(images, mask, steps=12, jump_length=3, resamples=1, seed=4)
    np.testing.assert_array_equal(one, r.repair(images, mask, steps=12, jump_length=5, resamples=1, seed=4))
    np.testing.assert_allclose(one, _reference_replacement(model, images, mask, 12, 4), atol=2e-5)
    assert not np.allclose(one, r.repair(images, mask, steps=12, jump_length=3, resamples=3, seed=4))


@pytest.mark.parametrize("kind", masks.MASKS)
def test_known_region_is_the_original(tiny_model, kind):
    images = data.load("digits", "held-out").images[:4]
    mask = masks.make(kind, 4, 16, seed=1)
    out = Repairer(tiny_model.model).repair(images, mask, steps=10, jump_length=2, resamples=2)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out * mask, images * mask, atol=1e-6)
    assert 0 < (mask == 0).mean() < 1


def test_training_reduces_the_loss(tiny_model):
    losses = tiny_model.losses
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.7 * losses[:10].mean()


def test_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(iterations=12, batch_size=8, channels=TINY, checkpoint_every=5)
    whole = train(cfg, tmp_path / "whole.msgpack", progress=False)

    import mecsim.aigc.train as train_module

    calls = {"n": 0}
    real = train_module.write_bytes

    def interrupt_after_second_checkpoint(path, blob):
        real(path, blob)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "write_bytes", interrupt_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part.msgpack", progress=False)
    assert (tmp_path / "part.msgpack.ckpt").is_file() and not (tmp_path / "part.msgpack").exists()
    monkeypatch.setattr(train_module, "write_bytes", real)
    resumed = train(cfg, tmp_path / "part.msgpack", progress=False)
    assert resumed.resumed_from == 10
    assert not (tmp_path / "part.msgpack.ckpt").exists()
    _assert_same_params(resumed.model.params, whole.model.params)


def _assert_same_params(a, b):
    """Same tree of parameters, bit for bit."""
    import jax

    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_weights_round_trip(tiny_model, tmp_path):
    loaded = weights.load(tiny_model.path)
    assert loaded.unet == tiny_model.model.unet and loaded.dataset == "digits"
    _assert_same_params(loaded.params, tiny_model.model.params)


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_masks():
    with pytest.raises(AigcError, match=r"mask: shape \(8, 8\); expected \(16, 16\) or \(2, 16, 16\)"):
        masks.validate(np.ones((8, 8)), 2, 16)
    with pytest.raises(AigcError, match="mask: values 0, 0.5, 1; allowed are 0 .repair. and 1 .keep."):
        masks.validate(np.array([[0, 0.5], [1, 1]]), 1, 2)
    with pytest.raises(AigcError, match="mask = 'circle': allowed are 'centre', 'half', 'strokes'"):
        masks.make("circle", 1, 16)


def test_bad_repair_arguments(tiny_model):
    r = Repairer(tiny_model.model)
    images = data.load("digits", "held-out").images[:2]
    mask = masks.make("centre", 2, 16)
    with pytest.raises(AigcError, match="steps = 0: give an integer >= 1"):
        r.repair(images, mask, steps=0)
    with pytest.raises(AigcError, match=r"images: shape \(0, 16, 16\); expected \(n, 16, 16\) with n >= 1"):
        r.repair(images[:0], mask[:0])
    with pytest.raises(AigcError, match="images: 28 x 28 pixels; this model repairs 16 x 16 images"):
        r.repair(np.zeros((2, 28, 28), np.float32), mask)
    with pytest.raises(AigcError, match="within .0, 1."):
        r.repair(images * 255, mask)
    with pytest.raises(AigcError, match="steps = 2000: give an integer in 1..1000"):
        r.repair(images, mask, steps=2000)


def test_corrupt_weights_file(tmp_path, tiny_model):
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\x00not msgpack at all")
    with pytest.raises(weights.WeightsError, match=f"weights {bad}: not a readable weights file"):
        weights.load(bad)
    truncated = tmp_path / "truncated.msgpack"
    truncated.write_bytes(tiny_model.path.read_bytes()[:500])
    with pytest.raises(weights.WeightsError, match="not a readable weights file"):
        weights.load(truncated)
    with pytest.raises(weights.WeightsError, match="no such file"):
        weights.load(tmp_path / "absent.msgpack")


def test_command_line_reports_bad_input_without_traceback(tmp_path, tiny_model):
    from click.testing import CliRunner

    from mecsim.cli import main

    runner = CliRunner()
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((16, 16), 0.5))
    args = ["aigc", "repair", "--weights", str(tiny_model.path), "--images", "2", "--steps", "4"]
    res = runner.invoke(main, [*args, "--mask", str(bad), "--out", str(tmp_path / "a")])
    assert res.exit_code != 0 and "values 0.5; allowed are 0 (repair) and 1 (keep)" in res.output
    assert "Traceback" not in res.output
    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(b"garbage")
    res = runner.invoke(main, ["aigc", "repair", "--weights", str(corrupt), "--out", str(tmp_path / "b")])
    assert (
        res.exit_code != 0 and "not a readable weights file" in res.output and "Traceback" not in res.output
    )


def test_repair_command_writes_grid_and_arrays(tmp_path, tiny_model):
    from click.testing import CliRunner

    from mecsim.cli import main

    out = tmp_path / "rep"
    res = CliRunner().invoke(
        main,
        [
            "aigc",
            "repair",
            "--weights",
            str(tiny_model.path),
            "--mask",
            "half",
            "--images",
            "3",
            "--steps",
            "5",
        ]
        + ["--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    saved = np.load(out / "repair.npz")
    assert set(saved.files) == {"original", "mask", "repaired"}
    assert saved["repaired"].shape == (3, 16, 16) and saved["mask"][0, 15, 0] == 0
    assert (out / "grid.png").stat().st_size > 1000


def test_shipped_weights_repair_plausibly():
    """The weights that ship with the package repair a fixed held-out set far better than leaving the hole."""
    from mecsim.aigc.quality import plausibility

    model = weights.load()
    assert model.dataset == "digits" and model.unet.side == 16
    held = data.load("digits", "held-out")
    x, labels = held.images[:40], held.labels[:40]
    mask = masks.make("centre", 40, 16)
    out = Repairer(model).repair(x, mask, steps=50, jump_length=10, resamples=3, seed=0)
    repaired, hole = plausibility(out, labels), plausibility(x * mask, labels)
    assert repaired >= hole + 0.3, (repaired, hole)
    assert repaired >= 0.75


def test_cost_fit_recovers_a_known_law_and_the_fragment_is_a_scenario():
    import tomllib

    import pandas as pd

    from mecsim.aigc.cost import fit, scenario_fragment
    from mecsim.config import Scenario

    grid = [(b, s) for b in (1, 2, 4, 8) for s in (10, 25, 50)]
    times = pd.DataFrame(
        [{"images": b, "evaluations": s, "seconds": 0.03 + 0.002 * s + 0.001 * b * s} for b, s in grid]
    )
    best = fit(times)[0]
    assert best.shape == "a + d·s + c·b·s" and best.r2 == pytest.approx(1.0)
    assert (best.a, best.d, best.c) == pytest.approx((0.03, 0.002, 0.001))
    text = scenario_fragment(best, 2.0, 16, times, evaluations=50)
    doc = tomllib.loads(text)
    scenario = Scenario(**doc["scenario"])
    # a request of 8 images at s = 50: 2 GHz x (0.03 + 0.1 + 0.4) s = 1.06 Gcycles over 8 x 0.002 Mbit
    mbit = 8 * 16 * 16 * 8 / 1.024e6
    assert scenario.size_range[1] == pytest.approx(mbit, rel=1e-5)
    assert scenario.density_range[0] == pytest.approx(1.06e9 / (mbit * 1.024e6), rel=1e-5)
