"""The decoder's calibration (models/calibration.py): the colour table (identity, a fit that
moves colours towards the footage's, kept only where it helps) and the still background."""
from pathlib import Path

import numpy as np
import pytest
import torch

from everloop.models import calibration as colour


def test_identity_table_maps_every_colour_to_itself():
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(colour.apply_table(x, colour.identity_table(9)), x, atol=1e-5)


def blurred_pair(n=20000, seed=0):
    """Real colours in two clusters (red blobs on yellow); a 'decoder' that draws them a
    little dark and mixes a fifth of the pixels somewhere between the two (blur at edges)."""
    rng = np.random.default_rng(seed)
    red, yellow = np.array([0.85, 0.1, 0.1]), np.array([0.95, 0.85, 0.2])
    real = np.where(rng.random((n, 1)) < 0.3, red, yellow) + rng.normal(0, 0.02, (n, 3))
    drawn = real * 0.9
    mix = rng.random(n) < 0.2
    t = rng.random((mix.sum(), 1))
    drawn[mix] = (t * red + (1 - t) * yellow) * 0.9
    return np.clip(drawn, 0, 1), np.clip(real, 0, 1)


def test_fit_moves_drawn_colours_towards_the_real_ones():
    drawn, real = blurred_pair()
    table = colour.fit_table(drawn, real, iterations=20, grid=17)
    assert table.shape == (3, 17, 17, 17) and torch.isfinite(table).all()
    assert table.min() >= 0 and table.max() <= 1
    mapped = colour.apply_pixels(torch.from_numpy(drawn).float(), table).numpy()
    before, after = colour.histogram_l1(drawn, real), colour.histogram_l1(mapped, real)
    assert after < 0.5 * before, (before, after)


def test_fit_is_deterministic():
    drawn, real = blurred_pair(5000)
    a = colour.fit_table(drawn, real, iterations=5, grid=9)
    b = colour.fit_table(drawn, real, iterations=5, grid=9)
    assert torch.equal(a, b)


def test_a_table_that_does_not_help_is_not_kept():
    """Drawn colours already distributed as the real ones: the identity stays."""
    rng = np.random.default_rng(1)
    real = rng.random((20000, 3))
    table = colour.fit_table(rng.permutation(real), real, iterations=10, grid=9)
    assert torch.equal(table, colour.identity_table(9))


def test_a_table_is_chosen_on_the_check_colours_and_must_beat_the_one_kept():
    """Fitted on blurred colours, chosen on other ones: where the check's drawn colours are
    already the real ones, nothing beats `keep` (here an inverted table, which loses to the
    identity but is what the caller had: it stays); a helpful check takes the fit."""
    drawn, real = blurred_pair()
    keep = 1 - colour.identity_table(9)
    same = colour.fit_table(drawn, real, iterations=10, grid=9, check=(real, real), keep=colour.identity_table(9))
    assert torch.equal(same, colour.identity_table(9))
    helped = colour.fit_table(drawn, real, iterations=10, grid=9, check=(drawn, real), keep=keep)
    assert not torch.equal(helped, keep)
    mapped = colour.apply_pixels(torch.from_numpy(drawn).float(), helped).numpy()
    assert colour.histogram_l1(mapped, real) < colour.histogram_l1(drawn, real)


def test_still_plate_snaps_only_still_pixels_near_it():
    """Left half of the footage never moves, the right half flickers: a decoded frame a
    little off the plate is put back on it on the left only; far off, it is kept."""
    g = torch.Generator().manual_seed(0)
    frames = torch.full((40, 3, 4, 8), 0.5)
    frames[:, :, :, 4:] = torch.rand(40, 3, 4, 4, generator=g)
    plate, stillness = colour.still_plate(frames)
    assert stillness[0, :, :4].eq(1).all() and stillness[0, :, 4:].eq(0).all()
    near = (plate + 0.03)[None]
    out = colour.snap_to_plate(near, plate, stillness, 0.08)
    assert torch.equal(out[..., :4], plate[None, ..., :4])
    assert torch.allclose(out[..., 4:], near[..., 4:])
    far = (plate + 0.3)[None]
    assert torch.allclose(colour.snap_to_plate(far, plate, stillness, 0.08), far)


def test_training_fits_the_table_and_generation_uses_it(tmp_path, tiny_data):
    """The encode stage fits the table (logged before/after, never worse on its check
    pixels), it is saved with the run, and a loaded run decodes through it."""
    import json

    from everloop import checkpoint
    from everloop.train import TrainArgs, train
    run = train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "wm"), family="worldmodel", preset="tiny",
                          steps=8, sample_every=0, progress=False, precision="fp32"))
    logs = [json.loads(line) for line in Path(run, "log.jsonl").read_text().splitlines()]
    fit = [r for r in logs if "colour_l1_before" in r]
    assert fit and 0 <= fit[0]["colour_l1_after"] <= 2 and 0 <= fit[0]["colour_l1_before"] <= 2
    model = checkpoint.load_run(run)[0]
    assert model.cfg.colour_table == 33 and torch.isfinite(model.colour_lut).all()
    z = torch.randn(2, model.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = colour.apply_table(model.patch_bank()(model.vae.decode(z).float()), model.colour_lut)
        want = colour.snap_to_plate(want, model.still_plate, model.stillness, model.cfg.still_snap)
        assert torch.equal(model.decode(z), want)


@pytest.mark.parametrize("bad", [{"colour_table": 1}, {"colour_table": 200}])
def test_colour_table_sides_out_of_range_are_refused(bad):
    from everloop.errors import EverloopError
    from everloop.models import build, make_config
    with pytest.raises(EverloopError, match="colour_table"):
        build("worldmodel", make_config("worldmodel", "tiny", bad))


@pytest.mark.parametrize("value", [2.0, -0.1, float("nan")])
def test_still_snap_out_of_range_is_refused_by_name(value):
    from everloop.errors import EverloopError
    from everloop.models.worldmodel_config import WorldModelConfig
    from everloop.validate import check_values
    with pytest.raises(EverloopError, match="--set still_snap"):
        check_values(WorldModelConfig, {"still_snap": value}, "--set", from_set={"still_snap"})


@pytest.mark.parametrize("size,side", [(16, 8), (20, 8), (16, 16), (12, 5)])
def test_patches_cover_every_pixel_and_paste_back_exactly(size, side):
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    _, corners = colour.patch_grid(size, side)
    patches = colour.cut(x, corners, side)
    assert patches.shape == (len(corners), 3, 3 * side * side)
    assert torch.allclose(colour.paste(patches, corners, side, size), x, atol=1e-6)
    pick = torch.randint(0, 3, (len(corners), 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(colour.cut_at(x, pick, corners, side)[:, 2], patches[torch.arange(len(corners)), pick[:, 2]])


def test_patch_bank_gives_a_drawn_bank_frame_its_real_detail_back():
    """A bank frame as the decoder drew it (blurred) matches itself at every place, so the
    detail added is exactly what the blur took: the real frame comes back."""
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(6, 3, 16, 16, generator=g) * 255).round().to(torch.uint8)
    blur = torch.nn.functional.avg_pool2d(real.float(), 3, 1, 1, count_include_pad=False).round().to(torch.uint8)
    proj = colour.fit_projection(blur.float() / 255, 8)
    bank = colour.PatchBank(real, blur, proj, 8)
    out = bank(blur[2:4].float() / 255)
    assert torch.allclose(out, real[2:4].float() / 255, atol=1e-5)
    other = torch.rand(2, 3, 16, 16, generator=g)  # anything else: still a frame in [0, 1]
    y = bank(other)
    assert y.shape == other.shape and torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
    assert torch.equal(bank(other), y)


def test_training_fills_the_patch_bank_and_a_loaded_run_decodes_the_same(tmp_path, tiny_data):
    from everloop import checkpoint
    from everloop.train import TrainArgs, train
    run = train(TrainArgs(data=str(tiny_data), out=str(tmp_path / "wm"), family="worldmodel", preset="tiny",
                          steps=8, sample_every=0, progress=False, precision="fp32"))
    a, b = checkpoint.load_run(run)[0], checkpoint.load_run(run)[0]
    assert a.cfg.patch_detail > 0 and a.patch_real.dtype == torch.uint8 and a.patch_real.float().std() > 0
    z = torch.randn(3, a.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = colour.apply_table(a.vae.decode(z).float(), a.colour_lut)
        assert torch.equal(a.decode(z), b.decode(z))
        assert not torch.equal(a.decode(z), colour.snap_to_plate(plain, a.still_plate, a.stillness, a.cfg.still_snap))


@pytest.mark.parametrize("bad", [{"patch_detail": 200}, {"patch_detail": -1}, {"patch_bank": 0}, {"still_hold": 40}])
def test_patch_sizes_and_holds_out_of_range_are_refused(bad):
    from everloop.errors import EverloopError
    from everloop.models import build, make_config
    with pytest.raises(EverloopError, match="patch_|still_hold"):
        build("worldmodel", make_config("worldmodel", "tiny", bad))
