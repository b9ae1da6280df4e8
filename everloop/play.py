"""`everloop play RUN`: play the game an action-conditioned run learned (docs/play.md).

A pygame window: arrow keys or WASD steer (both at once give a diagonal, where the game
has one; Space is FIRE), no key down is NOOP, R restarts from a real start frame, Esc or q
quits. One model step per tick at the recording's rate (15 steps/s at --ale-v5).

`--actions FILE.npy --out FILE.mp4` plays a scripted action sequence without a window (for
tests and evaluation; pygame is not needed then): the same run, seed and actions give the
same frames, and the steps per second the model ran at are printed. `--beside-real --out
FILE.gif` plays the actions recorded in the held-out episode instead and shows the model's
frames on the left of the real ones (docs/play.md's GIF).

Starts are real: the first `context` frames of a held-out episode of the run's dataset
(the Test split: frames the model never trained on), drawn by --seed, or --episode K."""
from __future__ import annotations

import time

import numpy as np
import torch

from .data import FrameStore, to_float, to_uint8
from .errors import EverloopError

KEYS = {"UP": ("K_UP", "K_w"), "DOWN": ("K_DOWN", "K_s"), "LEFT": ("K_LEFT", "K_a"),
        "RIGHT": ("K_RIGHT", "K_d"), "FIRE": ("K_SPACE",)}
"""Which pygame keys press which part of an ALE action name."""


def action_for(pressed: set[str], meanings: list[str]) -> int:
    """The action whose ALE name is made of the pressed parts (UP + RIGHT -> UPRIGHT), or
    the nearest the game has: drop FIRE, then the horizontal part, then the vertical;
    0 (NOOP) when no part is pressed or the game has none of them. Opposite directions
    cancel."""
    vert = "" if {"UP", "DOWN"} <= pressed else "UP" if "UP" in pressed else "DOWN" if "DOWN" in pressed else ""
    horiz = "" if {"LEFT", "RIGHT"} <= pressed else \
        "RIGHT" if "RIGHT" in pressed else "LEFT" if "LEFT" in pressed else ""
    fire = "FIRE" if "FIRE" in pressed else ""
    index = {m: i for i, m in enumerate(meanings)}
    for name in (vert + horiz + fire, vert + horiz, vert + fire, horiz + fire, vert, horiz, fire):
        if name and name in index:
            return index[name]
    return 0


class Game:
    """A run you can play: the model, the held-out start frames of its data, its actions."""

    def __init__(self, run, data: str | None = None, device: str = "cpu", seed: int = 0):
        from .checkpoint import load_run
        from .devices import resolve
        self.model, config = load_run(run, resolve(device))
        if self.model.n_actions < 1:
            raise EverloopError(f"{run}: a {self.model.family} run takes no actions; play needs an "
                                "action-conditioned run (--family playable, docs/play.md)")
        data = data or (config.get("data") or {}).get("path")
        if not data:
            raise EverloopError(f"{run}: config.json names no dataset; give --data DATA")
        self.store = FrameStore(data)
        if self.store.actions is None:
            raise EverloopError(f"{data}: has no actions (record a game with `everloop record atari`)")
        if (self.store.height, self.store.width) != (self.model.frame_size,) * 2:
            raise EverloopError(f"{data}: frames are {self.store.height}x{self.store.width}, the run's "
                                f"are {self.model.frame_size}x{self.model.frame_size}")
        info = self.store.meta["actions"]
        self.meanings = list(info.get("meanings") or [str(i) for i in range(info["count"])])
        self.stride, k = self.model.clip_stride, self.model.context_frames
        span = (k - 1) * self.stride + 1
        self.starts = [s for s, e in self.store.split()[1] if e - s >= span]
        if not self.starts:
            raise EverloopError(f"{data}: no held-out episode holds {span} frames to start from")
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.state, self.episode = None, None

    def restart(self, episode: int | None = None) -> np.ndarray:
        """Start again from the first frames of held-out episode `episode` (None: a random
        one, drawn from the seed's stream); returns the frame shown, uint8 [H, W, 3]."""
        if episode is None:
            episode = int(self.rng.integers(len(self.starts)))
        if not 0 <= episode < len(self.starts):
            raise EverloopError(f"--episode {episode}: the data has {len(self.starts)} held-out episodes "
                                f"(0 to {len(self.starts) - 1})")
        idx = self.starts[episode] + self.stride * np.arange(self.model.context_frames)
        clip = to_float(np.asarray(self.store.frames[idx]))[None]
        from .devices import of
        with torch.inference_mode():
            self.state = self.model.start(1, self.generator, seed_clip=clip.to(of(self.model)))
        self.episode = episode
        return self.frame()

    def step(self, action: int) -> np.ndarray:
        """One model step with `action` pressed; the new frame, uint8 [H, W, 3]."""
        if not 0 <= action < len(self.meanings):
            raise EverloopError(f"action {action}: the game has actions 0 to {len(self.meanings) - 1}")
        with torch.inference_mode():
            self.state = self.model.advance(self.state, self.generator, action=torch.tensor([action]))
        return self.frame()

    def recorded(self, episode: int, steps: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The real continuation of held-out episode `episode` from where restart() begins
        it, and the actions recorded there: (uint8 frames [T + 1, H, W, 3], actions [T])."""
        k, start = self.model.context_frames, self.starts[episode]
        end = next(e for s, e in self.store.split()[1] if s == start)
        first = start + self.stride * (k - 1)  # the frame restart() shows
        n = (end - 1 - first) // self.stride
        n = n if steps is None else min(n, steps)
        idx = first + self.stride * np.arange(n + 1)
        acts = np.asarray(self.store.actions[idx[:-1]], dtype=np.int64)  # the first of each stride's actions
        return np.asarray(self.store.frames[idx]), acts

    def frame(self) -> np.ndarray:
        from .rollout import latent_of
        with torch.inference_mode():
            return to_uint8(self.model.decode(latent_of(self.state)))[0]

    def display_size(self, zoom: int) -> tuple[int, int]:
        """(width, height) of the window: the native screen's shape (a 64x64 dataset squashed
        from 160x210 is shown at 160x210), times zoom."""
        crop = (self.store.meta.get("recorded") or {}).get("crop")
        w, h = (crop[2], crop[3]) if crop else (self.store.width, self.store.height)
        return w * zoom, h * zoom


def read_actions(path, n_actions: int) -> np.ndarray:
    """A scripted action sequence: integers [T] in 0..n_actions-1 in a .npy file."""
    try:
        actions = np.load(path)
    except (OSError, ValueError) as e:
        raise EverloopError(f"--actions {path}: unreadable ({e})") from None
    if actions.ndim != 1 or actions.dtype.kind not in "iu" or not len(actions):
        raise EverloopError(f"--actions {path}: must hold integers [T], got {actions.dtype} {list(actions.shape)}")
    if actions.min() < 0 or actions.max() >= n_actions:
        raise EverloopError(f"--actions {path}: actions must be 0 to {n_actions - 1}")
    return actions.astype(np.int64)


def play_scripted(game: Game, actions: np.ndarray, sink, episode: int | None = None,
                  beside: np.ndarray | None = None) -> float:
    """Write the start frame and one frame per action into `sink` (with the frames of
    `beside` on their right, if given); returns model steps/s."""
    def show(t, frame):
        sink.write((frame if beside is None else np.concatenate([frame, beside[t]], 1))[None])
    show(0, game.restart(episode))
    t0, spent = time.perf_counter(), 0.0
    for t, a in enumerate(actions):
        frame = game.step(int(a))
        spent = time.perf_counter() - t0
        show(t + 1, frame)
    return len(actions) / max(spent, 1e-9)


def play_window(game: Game, fps: float, zoom: int, episode: int | None = None) -> int:
    """The keyboard game; returns the steps played."""
    from .live import _pygame, check_display
    check_display()
    pygame = _pygame()
    pygame.display.init()
    try:
        size = game.display_size(zoom)
        screen = pygame.display.set_mode(size)
        keys = {part: [getattr(pygame, k) for k in names] for part, names in KEYS.items()}
        clock, steps, frame, last = pygame.time.Clock(), 0, game.restart(episode), time.monotonic()
        while True:
            for event in pygame.event.get():
                if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN
                                                 and event.key in (pygame.K_ESCAPE, pygame.K_q)):
                    return steps
                if event.type == pygame.KEYDOWN and event.key == pygame.K_r:
                    frame = game.restart()
            down = pygame.key.get_pressed()
            action = action_for({p for p, ks in keys.items() if any(down[k] for k in ks)}, game.meanings)
            image = pygame.image.frombuffer(np.ascontiguousarray(frame).tobytes(), frame.shape[1::-1], "RGB")
            screen.blit(pygame.transform.scale(image, size), (0, 0))
            pygame.display.flip()
            frame, steps = game.step(action), steps + 1
            clock.tick(fps)
            if time.monotonic() - last > 1.0:
                pygame.display.set_caption(f"everloop play - {game.meanings[action]} - {clock.get_fps():.1f} steps/s")
                last = time.monotonic()
    finally:
        pygame.display.quit()


def cmd_play(a) -> None:
    from .outputs import claim
    if a.beside_real and a.actions is not None:
        raise EverloopError("--beside-real plays the recorded actions; leave out --actions")
    if (a.actions is None and not a.beside_real) != (a.out is None):
        raise EverloopError("--actions (or --beside-real) and --out go together (a scripted game written to a file)")
    if a.out is not None:
        from .sinks import output_kind
        claim(a.out, output_kind(a.out), force=a.force, inputs={"RUN": a.run, "--actions": a.actions})
    elif a.actions is None:
        from .live import check_display
        check_display()  # before the model loads: a headless machine fails in a second
    if a.threads:
        torch.set_num_threads(a.threads)
    game = Game(a.run, a.data, a.device, a.seed)
    fps = a.fps or game.store.fps
    if a.out is None:
        steps = play_window(game, fps, a.zoom, a.episode)
        print(f"played {steps} steps")
        return
    from .sinks import open_sink
    real = None
    if a.beside_real:
        episode = a.episode if a.episode is not None else int(game.rng.integers(len(game.starts)))
        game.restart(episode)  # checks the index
        real, actions = game.recorded(episode, a.steps)
        a.episode = episode
    else:
        actions = read_actions(a.actions, len(game.meanings))[:a.steps]
    with open_sink(a.out, fps=fps, frames=len(actions) + 1, force=a.force,
                   inputs={"RUN": a.run, "--actions": a.actions}) as sink:
        rate = play_scripted(game, actions, sink, a.episode, beside=real)
    print(f"wrote {a.out}: {len(actions) + 1} frames from held-out episode {game.episode} "
          f"({rate:.1f} model steps/s at batch 1)")


def add_play_parser(subparsers) -> None:
    """`everloop play RUN [--actions FILE.npy --out FILE.mp4]`."""
    from .validate import SEED, number, positive
    s = subparsers.add_parser("play", help="play an action-conditioned run with the keyboard "
                                           "(or a scripted action sequence into a video)")
    s.add_argument("run")
    s.add_argument("--data", help="dataset to start from (default: the one the run trained on)")
    s.add_argument("--actions", metavar="FILE.npy", help="play these actions (integers [T]) without a window")
    s.add_argument("--out", help="with --actions: the video to write (.mp4, .png APNG, .gif or a folder/)")
    s.add_argument("--beside-real", action="store_true",
                   help="play the held-out episode's recorded actions; the real frames on the right")
    s.add_argument("--steps", type=positive("--steps"), help="play at most this many actions")
    s.add_argument("--seed", type=SEED, default=0, help="draws the held-out start episodes (default 0)")
    s.add_argument("--episode", type=number("--episode", int, lo=0),
                   help="start from this held-out episode (default: one drawn by --seed)")
    s.add_argument("--fps", type=positive("--fps", float, hi=1000),
                   help="model steps per second (default: the data's, 15 at --ale-v5)")
    s.add_argument("--zoom", type=positive("--zoom", hi=16), default=3,
                   help="window size: the native screen times this (default 3)")
    s.add_argument("--threads", type=positive("--threads", hi=1024))
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--force", action="store_true", help="replace an existing --out of the same kind")
    s.set_defaults(func=cmd_play)
