"""The flow-matching dream head (worldmodel dream_head 'flow', models/flow_head.py): it
learns a conditional distribution, it is trained in a stage of its own after the RNN, it
is what draws the dream (a test that fails if the dream ignored it), and a run with the
MDN head has no such stage."""
import json
import math

import torch

from everloop import checkpoint, rollout
from everloop.models.flow_head import FlowHead
from everloop.train import TrainArgs, train


def wm_args(data, out, **kw):
    return TrainArgs(data=str(data), out=str(out), family="worldmodel", preset="tiny", sample_every=0,
                     progress=False, precision="fp32", **kw)


def test_the_head_learns_where_each_condition_leads():
    torch.manual_seed(0)
    h, z1 = torch.eye(4), torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    head = FlowHead(2, 4, width=64)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(1500):
        loss = head.loss(h.repeat(16, 1), z1.repeat(16, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        drawn = head.sample(h.repeat(32, 1), torch.randn(128, 2, generator=torch.Generator().manual_seed(1)), 16)
    assert torch.isfinite(drawn).all()
    assert (drawn - z1.repeat(32, 1)).norm(dim=1).median() < 0.3  # every draw near its condition's point


def test_the_flow_stage_follows_the_rnn_and_draws_the_dream(tmp_path, tiny_data):
    run = train(wm_args(tiny_data, tmp_path / "wm", steps=8))
    state = checkpoint.load_train_state(run)
    assert state["stage_starts"] == {"vae": 0, "encode": 4, "rnn": 4, "flow": 6}
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in logs if "flow_loss" in e] == ["flow", "flow"]
    assert all(torch.isfinite(torch.tensor(e["flow_loss"])) for e in logs if "flow_loss" in e)
    model, _ = checkpoint.load_run(run)
    z = next(rollout.latents(model, batch=2, seed=3, chunk=40))
    assert torch.isfinite(z).all() and (z[:, 1:] - z[:, :-1]).abs().sum() > 0
    with torch.no_grad():
        model.flow.net[-1].bias.add_(1.0)  # the head moved: the dream must move with it
    assert not torch.equal(z, next(rollout.latents(model, batch=2, seed=3, chunk=40)))


def test_the_flow_stage_makes_its_updates_whatever_the_budget(tmp_path, tiny_data):
    for name, budget in (("steps", {"steps": 8}), ("minutes", {"minutes": 0.005})):
        run = train(wm_args(tiny_data, tmp_path / name, overrides={"flow_head_updates": 10}, **budget))
        logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert sum("flow_loss" in e for e in logs) == 5, name  # 10 updates, flow_updates 2 a step
        assert logs[-1]["stage"] == "flow"
    longer = train(wm_args(tiny_data, tmp_path / "steps", steps=14, resume=True))  # a run made longer
    logs = [json.loads(line) for line in (longer / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logs if "flow_loss" in e] == list(range(7, 15))  # 7-11 its 5, then on to 14


def test_the_flow_stage_lasts_its_passes_over_the_pairs(tmp_path, tiny_data):
    run = train(wm_args(tiny_data, tmp_path / "epochs", steps=8, overrides={"flow_head_epochs": 0.5}))
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    pairs = next(e["flow_pairs"] for e in logs if e.get("event") == "begin" and e["stage"] == "flow")
    updates = math.ceil(0.5 * pairs / 16)  # the tiny preset's flow_batch; its flow_updates is 2
    assert pairs > 16 and sum("flow_loss" in e for e in logs) == math.ceil(updates / 2)


def test_a_run_with_the_mdn_head_trains_no_flow_stage(tmp_path, tiny_data):
    run = train(wm_args(tiny_data, tmp_path / "mdn", steps=8, overrides={"dream_head": "mdn"}))
    assert set(checkpoint.load_train_state(run)["stage_starts"]) == {"vae", "encode", "rnn"}
    model, _ = checkpoint.load_run(run)
    assert not hasattr(model, "flow")


def test_flow_targets_are_drawn_from_the_next_latents_posterior_by_the_trainers_rng():
    import numpy as np

    from everloop.models import build, make_config
    pairs = []
    for noise in (0.0, 0.35):
        model = build("worldmodel", make_config("worldmodel", "tiny", {"posterior_noise": noise}))
        c = model.cfg
        h, mu, logvar = torch.randn(50, c.rnn_hidden), torch.randn(50, c.z_dim), torch.zeros(50, c.z_dim)
        model.stage, model._flow_pairs = "flow", torch.cat([h, mu, logvar], -1)
        a, b = (model.sample_batch(None, np.random.default_rng(4)) for _ in range(2))
        assert a.shape == (c.flow_batch, c.flow_updates, c.rnn_hidden + c.z_dim) and torch.equal(a, b)
        pairs.append((a, mu))
    (exact, mu), (noisy, _) = pairs
    picked = exact[..., -mu.shape[1]:].reshape(-1, mu.shape[1])
    assert all(any(torch.equal(p, m) for m in mu) for p in picked)  # no noise: the means themselves
    assert not torch.equal(noisy[..., -mu.shape[1]:], exact[..., -mu.shape[1]:])


def test_the_flow_head_trains_in_fp32_under_bf16_autocast():
    import numpy as np

    from everloop.models import build, make_config
    model = build("worldmodel", make_config("worldmodel", "tiny", {}))
    c = model.cfg
    model.stage, model._flow_pairs = "flow", torch.randn(50, c.rnn_hidden + 2 * c.z_dim)
    seen = []
    model.flow.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = {"flow": torch.optim.Adam(model.flow.parameters(), lr=1e-3)}
    logs = model.train_step(model.sample_batch(None, np.random.default_rng(0)), opt, autocast=True)
    assert seen and set(seen) == {torch.float32} and np.isfinite(logs["flow_loss"])
