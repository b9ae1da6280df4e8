"""``everloop record atari``: play an Atari game (ALE) with a random policy and save the
screen as an episode tree that ``everloop prepare`` reads.

Layout written to OUT (what ``sources/frames.py`` reads; everything else is ignored by it)::

    OUT/record.json                     game, seed, policy, frameskip, episodes, split
    OUT/Train/ep000/000000.png ...      full 210x160 RGB screens, frame 0 = the reset screen
    OUT/Train/ep000/actions.npy         uint8 [frames - 1]: actions[t] leads frame t -> t+1
    OUT/Test/ep032/...                  the last ``--test-fraction`` of the episodes

Choices, and why:

* The environment's own sticky actions (``repeat_action_probability``) are off by default:
  the saved action is then exactly the action that was executed.  ``--ale-v5`` sets ALE
  v5's own defaults instead (frameskip 4, repeat_action_probability 0.25: one step = 4
  emulator frames, 15 steps/s, and on each of those frames the console keeps the previous
  input with probability 0.25).  ``actions.npy`` then holds the action the *player* chose,
  what a keyboard gives in ``everloop play``; the console's stickiness is part of the game
  a world model learns, as it is for agents trained on v5.  Either way a recording replays
  exactly from its env seed (ALE seeds its stickiness from it).
* Default ``--frameskip 1``: consecutive emulator frames, like the reference data; the
  model's clip stride decides how far apart the frames it sees are, not the recorder.
* Default policy ``sticky`` with p = 0.9: at frameskip 1 a fresh uniform action every frame
  makes Ms. Pac-Man reverse every few frames and dither in place (4 random episodes scored
  160-350, sticky 0.9 scored 320-690, i.e. she covers more of the maze).
* ``--skip-start``: every Ms. Pac-Man episode opens with the same 272 frames (the intro,
  where no input has any effect), whatever the seed; 40 episodes would repeat them 40 times.
  Skipped steps are played by the same policy, so the first saved frame is a real state.
* Policy ``mixed`` (for world models, docs/play.md): holds of one action, the action
  uniform over all of them (NOOP too), each held for a number of steps drawn log-uniformly
  from 1 to ``MIXED_LONGEST_HOLD``.  Short holds are taps and reversals in every corridor;
  long ones carry her along corridors into the whole maze, so every action is seen in many
  places and states, and the player's keys (held for many steps, or tapped) are in range.
* Episode ``i`` draws its emulator seed and its policy stream from ``(seed, i)`` alone, so
  a recording is byte-for-byte reproducible and its first k episodes do not depend on
  ``--episodes``.  The last episodes go to Test/, so the split does not either, beyond k.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from pathlib import Path

from everloop.data import ACTIONS_FILE
from everloop.errors import EverloopError
from everloop.outputs import (  # the same rules and renames as prepare
    claim,
    swap_into_place,
)

RECORD_FILE = "record.json"
POLICIES = ("random", "sticky", "mixed")
DEFAULT_STICKY_PROB = 0.9
MIXED_LONGEST_HOLD = 32  # steps: ~2 s at frameskip 4, a corridor's length
ALE_V5 = {"frameskip": 4, "repeat_action_probability": 0.25}
"""ALE v5's own defaults (``gym.make("ALE/MsPacman-v5")``), the option set ``--ale-v5``."""
ATARI_HZ = 60.0  # the 2600 draws 60 frames a second (NTSC); a step is frameskip of them


def _gym():
    """gymnasium with the ALE ids registered; a clear error when the extra is missing."""
    try:
        import ale_py
        import gymnasium as gym
    except ImportError as e:
        raise EverloopError(f"recording Atari needs ale-py and gymnasium ({e.name} is missing); "
                            "install them with: pip install -e '.[atari]'") from None
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on every env
    gym.register_envs(ale_py)
    return gym


def ale_games(gym) -> dict[str, str]:
    """Short name (``MsPacman``) -> env id (``ALE/MsPacman-v5``) for every ALE v5 game."""
    return {i[4:-3]: i for i in gym.registry if i.startswith("ALE/") and i.endswith("-v5")}


def resolve_game(name: str, gym=None) -> str:
    """A short name (any case, ``_`` and ``-`` ignored) or a registered ALE id -> env id."""
    gym = gym or _gym()
    spec = gym.registry.get(name)
    if spec is not None and "ale_py" in str(spec.entry_point):
        return name
    games = ale_games(gym)
    key = {_squash(short): env_id for short, env_id in games.items()}
    if _squash(name) in key:
        return key[_squash(name)]
    close = difflib.get_close_matches(name, list(games), n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "known: " + ", ".join(sorted(games))
    raise EverloopError(f"unknown Atari game {name!r} ({len(games)} ALE games; {hint})")


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def record(game: str, out, episodes: int, seed: int = 0, policy: str = "sticky",
           sticky_prob: float | None = None, frameskip: int = 1, max_steps: int | None = None,
           test_fraction: float = 0.2, skip_start: int = 0, force: bool = False,
           progress: bool = True, repeat_action_probability: float = 0.0) -> dict:
    """Record ``episodes`` episodes of ``game`` into the episode tree ``out``.

    Flags are checked before anything is created.  Everything is written into a hidden temp
    folder beside ``out`` and renamed into place only when every episode is done, so a
    crash or Ctrl-C leaves ``out`` as it was.  Returns what ``record.json`` holds.
    """
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    sticky_prob = _check_flags(episodes, seed, policy, sticky_prob, frameskip, max_steps,
                               test_fraction, skip_start)
    if not 0.0 <= repeat_action_probability <= 1.0:
        raise EverloopError(f"--repeat-action-probability must be in [0, 1], got {repeat_action_probability}")
    out = Path(out)
    _check_replaceable(out, force)  # before the emulator loads: a refused --out costs nothing
    gym = _gym()
    env_id = resolve_game(game, gym)
    n_test = 0 if test_fraction == 0 else min(episodes - 1, max(1, round(episodes * test_fraction)))
    width = max(3, len(str(episodes - 1)))
    names = [f"{'Test' if i >= episodes - n_test else 'Train'}/ep{i:0{width}d}"
             for i in range(episodes)]
    # frameskip and action stickiness are ours to set, whatever the id's defaults are
    env = gym.make(env_id, frameskip=frameskip, repeat_action_probability=repeat_action_probability)
    n_actions = int(env.action_space.n)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    total = episodes * (max_steps + 1) if max_steps else None
    done = []
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tqdm(total=total, unit="frame", desc=f"record {env_id}", disable=not progress,
                  dynamic_ncols=True) as bar:
            for i, name in enumerate(names):
                bar.set_postfix_str(f"episode {i + 1}/{episodes}")
                env_seq, policy_seq = np.random.SeedSequence([seed, i]).spawn(2)
                env_seed = int(env_seq.generate_state(1)[0])
                rng = np.random.default_rng(policy_seq)
                folder = tmp / name
                folder.mkdir(parents=True)
                obs, _ = env.reset(seed=env_seed)
                actions, score, over, step = [], 0.0, False, 0
                choose = _policy(policy, sticky_prob, n_actions, rng)
                while True:
                    if step >= skip_start:
                        Image.fromarray(obs).save(folder / f"{len(actions):06d}.png")
                        bar.update()
                    if over or len(actions) == max_steps:
                        break
                    action = choose()
                    obs, reward, terminated, truncated, _ = env.step(action)
                    if step >= skip_start:
                        actions.append(action)
                    step += 1
                    score += float(reward)
                    over = terminated or truncated
                    if over and step <= skip_start:
                        raise EverloopError(f"{env_id} episode {i} ended after {step} steps, "
                                            f"inside --skip-start {skip_start}; lower it")
                np.save(folder / ACTIONS_FILE, np.array(actions, dtype=np.uint8))
                done.append({"name": name, "frames": len(actions) + 1, "score": score,
                             "game_over": bool(over), "env_seed": env_seed})
        meta = {
            "game": env_id[4:-3] if env_id.startswith("ALE/") else env_id, "env_id": env_id,
            "ale_py": _version("ale_py"), "gymnasium": _version("gymnasium"),
            "seed": seed, "policy": policy, "sticky_prob": sticky_prob, "frameskip": frameskip,
            "fps": ATARI_HZ / frameskip,
            "repeat_action_probability": repeat_action_probability, "max_steps": max_steps, "skip_start": skip_start,
            "test_fraction": test_fraction, "height": int(obs.shape[0]), "width": int(obs.shape[1]),
            "action_meanings": env.unwrapped.get_action_meanings(),
            "frames": sum(e["frames"] for e in done),
            "split": {"train": [e["name"] for e in done if e["name"].startswith("Train/")],
                      "test": [e["name"] for e in done if e["name"].startswith("Test/")]},
            "episodes": done,  # in the order prepare reads them: Train/ then Test/, by name
        }
        (tmp / RECORD_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        swap_into_place(tmp, out)
        return meta
    except OSError as e:  # disk full, permissions, ...: str(e) names the file at fault
        raise EverloopError(f"cannot record {out}: {e}") from None
    finally:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _policy(policy: str, sticky_prob: float, n_actions: int, rng):
    """A function that returns the next action of one episode's policy stream."""
    import numpy as np
    state = {"action": None, "left": 0}

    def sticky():
        # keep the last action with probability p; one uniform draw per step either way, so
        # the stream does not depend on what was drawn (random is sticky with p = 0)
        keep = rng.random() < sticky_prob
        fresh = int(rng.integers(n_actions))
        state["action"] = state["action"] if (keep and state["action"] is not None) else fresh
        return state["action"]

    def mixed():
        if state["left"] == 0:  # a new hold: any action, for 1 .. MIXED_LONGEST_HOLD steps
            state["action"] = int(rng.integers(n_actions))
            state["left"] = int(np.exp(rng.uniform(0.0, np.log(MIXED_LONGEST_HOLD + 1))))
        state["left"] -= 1
        return state["action"]

    return mixed if policy == "mixed" else sticky


def _check_flags(episodes, seed, policy, sticky_prob, frameskip, max_steps, test_fraction,
                 skip_start):
    """Every flag checked up front, one line naming it; returns the effective sticky p."""
    if episodes < 1:
        raise EverloopError(f"--episodes must be >= 1, got {episodes}")
    if seed < 0:
        raise EverloopError(f"--seed must be >= 0, got {seed}")
    if policy not in POLICIES:
        raise EverloopError(f"--policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if frameskip < 1:
        raise EverloopError(f"--frameskip must be >= 1, got {frameskip}")
    if max_steps is not None and max_steps < 1:
        raise EverloopError(f"--max-steps must be >= 1, got {max_steps}")
    if skip_start < 0:
        raise EverloopError(f"--skip-start must be >= 0, got {skip_start}")
    if not 0.0 <= test_fraction < 1.0:
        raise EverloopError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if policy in ("random", "mixed"):
        if sticky_prob is not None:
            raise EverloopError("--sticky-prob only applies to --policy sticky")
        return 0.0
    sticky_prob = DEFAULT_STICKY_PROB if sticky_prob is None else sticky_prob
    if not 0.0 <= sticky_prob <= 1.0:
        raise EverloopError(f"--sticky-prob must be in [0, 1], got {sticky_prob}")
    return float(sticky_prob)


def _version(module: str) -> str:
    from importlib.metadata import version
    return version(module.replace("_", "-"))


def _check_replaceable(out: Path, force: bool) -> None:
    """An empty or absent ``out`` is fine; a recording needs --force; anything else, never
    (--force must never wipe a folder that is not a recording, e.g. a typo'd path)."""
    claim(out, "recording", force=force)


# --------------------------------------------------------------------------- command line


def cmd_record_atari(a) -> None:
    frameskip, repeat = a.frameskip, a.repeat_action_probability
    if a.ale_v5:  # the option set; an explicit flag beside it would be ambiguous
        if frameskip is not None or repeat is not None:
            raise EverloopError("--ale-v5 sets --frameskip 4 --repeat-action-probability 0.25; give "
                                "either the option set or the two flags")
        frameskip, repeat = ALE_V5["frameskip"], ALE_V5["repeat_action_probability"]
    meta = record(a.game, a.out, a.episodes, seed=a.seed, policy=a.policy,
                  sticky_prob=a.sticky_prob, frameskip=1 if frameskip is None else frameskip,
                  max_steps=a.max_steps, test_fraction=a.test_fraction, skip_start=a.skip_start,
                  force=a.force, progress=not a.quiet,
                  repeat_action_probability=0.0 if repeat is None else repeat)
    split = meta["split"]
    print(f"wrote {a.out}: {meta['frames']} frames of {meta['height']}x{meta['width']} in "
          f"{len(meta['episodes'])} episodes ({len(split['train'])} Train/, "
          f"{len(split['test'])} Test/); next: everloop prepare {a.out} --out DATA "
          f"--fps {meta['fps']:g}")


def add_record_parser(subparsers) -> None:
    """``everloop record atari ...``; other simulators become sibling subcommands."""
    p = subparsers.add_parser("record", help="record footage from a simulator as an episode tree")
    sims = p.add_subparsers(dest="simulator", required=True)
    s = sims.add_parser("atari", help="play an Atari game (ALE) with a random policy")
    s.add_argument("--game", required=True,
                   help="short name (MsPacman, Pong, ...) or a full id (ALE/MsPacman-v5)")
    s.add_argument("--episodes", type=int, required=True)
    s.add_argument("--out", required=True, help="folder to write: Train/, Test/, record.json")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--policy", choices=POLICIES, default="sticky",
                   help="random: a uniform action every step; sticky (default): keep the "
                        "previous action with probability --sticky-prob; mixed (world models): "
                        f"any action held for 1 to {MIXED_LONGEST_HOLD} steps, log-uniform")
    s.add_argument("--sticky-prob", type=float,
                   help=f"sticky policy's repeat probability (default {DEFAULT_STICKY_PROB})")
    s.add_argument("--frameskip", type=int,
                   help="emulator frames per step; only each step's last frame is saved (default 1)")
    s.add_argument("--repeat-action-probability", type=float,
                   help="the console keeps the previous input on each emulator frame with this "
                        "probability (ALE's sticky actions; default 0: the saved action is executed)")
    s.add_argument("--ale-v5", action="store_true",
                   help="ALE v5's defaults: --frameskip 4 --repeat-action-probability 0.25 "
                        "(one step = 4 emulator frames, 15 steps/s)")
    s.add_argument("--max-steps", type=int, help="cut an episode after this many steps")
    s.add_argument("--skip-start", type=int, default=0, metavar="STEPS",
                   help="play this many steps before the first saved frame (skips an "
                        "intro that is the same in every episode)")
    s.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of the episodes (the last ones) written to Test/")
    s.add_argument("--force", action="store_true", help="replace an earlier recording in OUT")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_record_atari)
