"""Golden tests of the next-frame prediction metrics on hand-made frames."""
import math

import pytest
import torch

from everloop import metrics
from everloop.errors import EverloopError


def frames(n=3, c=3, h=16, w=16, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_psnr_of_known_noise_is_the_closed_form():
    truth = torch.full((2, 3, 16, 16), 0.5)
    sign = torch.randint(0, 2, truth.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for sigma in (0.01, 0.1, 0.3):
        got = metrics.psnr(truth + sigma * sign, truth)
        # MSE is exactly sigma^2, so PSNR = 10 log10(1 / sigma^2) = -20 log10(sigma)
        assert torch.allclose(got, torch.full((2,), -20 * math.log10(sigma)), atol=1e-3), got


def test_ssim_is_one_for_identical_frames_and_lower_otherwise():
    x = frames()
    assert torch.allclose(metrics.ssim(x, x), torch.ones(3), atol=1e-5)
    noise = frames(seed=5) - 0.5
    a, b = (metrics.ssim((x + s * noise).clamp(0, 1), x) for s in (0.2, 0.6))
    assert (a < 0.99).all() and (b < a).all()


def test_sharp_difference_on_a_hand_made_edge():
    truth = torch.zeros(1, 1, 4, 4)
    truth[..., 2:] = 1.0             # a vertical edge between columns 1 and 2
    flat = torch.zeros(1, 1, 4, 4)
    # G(truth): |dx| = 1 at column 1 and (edge to zero padding) at column 3; |dy| = 1 on the
    # bottom row of columns 2-3.  G(flat) = 0, so the mean error = sum G(truth) / 16.
    g = metrics._grad_sum(truth)
    assert g.sum() == 4 + 4 + 2
    want = 10 * math.log10(16 / 10)
    assert math.isclose(float(metrics.sharp_diff(flat, truth)), want, rel_tol=1e-5)
    assert float(metrics.sharp_diff(truth, truth)) == 100.0  # floored error -> 100 dB


def test_psnr_moving_ignores_still_pixels():
    prev = torch.zeros(1, 3, 8, 8)
    truth = prev.clone()
    truth[..., :2, :] = 1.0          # only the top two rows move
    pred = truth.clone()
    pred[..., 4:, :] = 0.7           # large error, but on pixels that did not move
    assert float(metrics.psnr_moving(pred, truth, prev)) == 100.0
    pred[..., :2, :] = 0.9           # error 0.1 on the moving rows
    assert math.isclose(float(metrics.psnr_moving(pred, truth, prev)), 20.0, rel_tol=1e-4)
    assert math.isnan(float(metrics.psnr_moving(pred, prev, prev)))  # nothing moved


def test_prediction_table_steps_and_copy_last_baseline():
    clip = frames(n=2 * 5).view(2, 5, 3, 16, 16)
    context, truth = clip[:, 0], clip[:, 1:]
    perfect = metrics.prediction_table(truth, truth, context)
    assert list(perfect) == ["1", "2", "3", "4"]
    assert all(v["psnr"] == 100.0 and abs(v["ssim"] - 1) < 1e-5 for v in perfect.values())
    copy = metrics.prediction_table(context[:, None].expand_as(truth), truth, context)
    assert all(v["psnr"] < 20 for v in copy.values())


class CopyLast:
    """A stand-in next-frame family that repeats the last context frame (the baseline)."""
    family, context_frames = "copylast", 4

    def start(self, batch, generator=None, seed_clip=None):
        assert seed_clip.shape[:2] == (batch, self.context_frames)
        return seed_clip[:, -1]

    def advance(self, state, generator=None):
        return state

    def decode(self, state):
        return state


def test_prediction_eval_scores_the_held_out_continuation(tiny_data):
    from everloop.data import FrameStore
    from everloop.prediction import evaluate_prediction
    store = FrameStore(tiny_data)
    rep = evaluate_prediction(CopyLast(), store, stride=1, steps=6, clips=3, seed=0)
    assert list(rep["prediction"]) == [str(s) for s in range(1, 7)]
    assert rep["prediction"] == rep["prediction_baseline"]  # copy-last IS the baseline
    psnr = [v["psnr"] for v in rep["prediction"].values()]
    assert psnr[0] > psnr[-1]  # the blob moves away from where it was: error grows
    again = evaluate_prediction(CopyLast(), store, stride=1, steps=6, clips=3, seed=0)
    assert again == rep       # seeded: the same clips every time
    with pytest.raises(EverloopError, match="held-out split"):
        evaluate_prediction(CopyLast(), store, stride=1, steps=100, clips=3)
