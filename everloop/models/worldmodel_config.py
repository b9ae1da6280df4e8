"""The worldmodel family's configuration: every option with why it has its value, and the
presets. The model (worldmodel.py) reads these; nothing here runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import EverloopError


@dataclass
class WorldModelConfig:
    # Options added after runs were saved: a config.json without them loads with these,
    # which reproduce what such a run did (models.config_from_dict), whatever today's default.
    LEGACY: ClassVar[dict] = {"recon_loss": "l2", "decoder_upsample": "transposed", "decoder_blocks": 0,
                              "decoder_output": "sigmoid", "adv_weight": 0.0, "latent_grid": 0, "clip_weight": 0.0,
                              "foreground_weight": 0.0, "colour_table": 0,
                              "still_snap": 0.0, "patch_detail": 0, "still_hold": 0,
                              "rnn_dropout": 0.0, "fit_dream": False, "dream_colours": False,
                              "dream_head": "mdn",
                              "flow_head_epochs": 0.0}

    size: int = 64
    """Frame height = width in pixels; a power of two >= 8 (World Models: 64)."""
    z_dim: int = 32
    """Size of the VAE latent, the whole state of the scene (World Models: 32)."""
    latent_grid: int = 0
    """0: z is one vector (World Models). G > 0: z is a G x G map of z_dim / G^2 channels
    (the encoder stops at G x G, a 3x3 conv makes the stats): every region of the frame
    keeps its own code, for scenes of many small things."""
    vae_width: int = 32
    """Channels of the VAE's first conv; doubles per layer down to 4x4 (64x64: 32/64/128/256)."""
    kl_weight: float = 0.25
    """Weight of the KL term against the summed pixel loss (beta of a beta-VAE).
    World Models' 1.0 left ~20 nats in z on lava64 (held-out 26.9 dB); 0.25 lets it carry
    ~35 and reaches 28.6 dB in the same budget (docs/worldmodel.md)."""
    recon_loss: str = "l1+l2"
    """Pixel loss, summed over pixels: 'l1' (a Laplace likelihood: under doubt the median, a
    sharp edge), 'l2' (World Models; the mean, a blur at every moving edge) or 'l1+l2'. On
    lava64c at the same budget L1 took the reconstructions' temporal-spectrum ratio from 6.9x
    to 5.6x the real band (docs/worldmodel.md); but L1 alone has a trap: where an object
    covers a pixel less than half the time, the median is the empty scene, and a tiny
    bright square going round was never drawn (11 dB). The L2 part pulls hard while errors
    are large and fades near the end, where L1's constant pull makes the edges."""
    decoder_upsample: str = "transposed"
    """'transposed': k4 s2 transposed convs (World Models); 'nearest': nearest-neighbour
    doubling + 3x3 conv (no checkerboard pattern, Odena et al. 2016)."""
    decoder_blocks: int = 0
    """Extra 3x3 conv layers after each upsampling but the last (decoder capacity)."""
    decoder_output: str = "clip"
    """'clip': linear, hard-clipped to [0, 1] (in training too); 'sigmoid' (World Models). With
    the summed pixel loss at lr 1e-3 the sigmoid saturated at black within 50 steps and stayed
    there (10.6 dB) for every decoder but World Models' own with L2. The clip costs nothing
    for a pixel past 0 or 1, so the black background may sit anywhere below 0; a variant
    trained on the unclipped values drew softer blobs in two 30-minute runs (docs/worldmodel.md)."""
    clip_weight: float = 0.1
    """Weight of a penalty on decoder outputs past [0, 1] before the clip (summed over pixels).
    The clip passes no gradient there: on smooth colour waves one colour channel went above 1
    on every pixel early in training and stayed, every frame yellow (feature_fd 88x the band;
    docs/fidelity.md). A small weight only pulls such pixels back into reach."""
    adv_weight: float = 0.3
    """Weight of a PatchGAN adversarial term on the VAE's reconstructions, relative to the
    reconstruction gradient at the decoder's last layer (VQGAN's adaptive weight; patchgan.py);
    0 = off. It charges the blur left; a step costs ~2x. With L1 at the same CPU budget:
    spectrum ratio 5.6x -> 5.0x; in the 30-minute run 3.7x, and the dream 1.0x (tau 1)."""
    adv_start: int = 1000
    """VAE steps on reconstruction + KL alone before the discriminator and its term begin
    (VQGAN's disc_start): a discriminator facing a decoder that draws nothing yet teaches noise."""
    disc_width: int = 32
    """Channels of the patch discriminator's first conv (doubling over 3 strided convs)."""
    lr_disc: float = 1e-3
    """Adam learning rate of the discriminator (betas 0.5 / 0.9, as VQGAN)."""
    gdl_weight: float = 0.0
    """Weight of a gradient-difference loss (Mathieu et al.; alpha 2, summed over pixels like
    the squared error) on the VAE's reconstructions: it charges blurred edges directly."""
    foreground_weight: float = 10.0
    """Extra weight of the pixel loss where a frame differs from the footage's median frame
    by more than 0.1 in some channel (the things that come and go); 0 = off. On a mostly
    still scene of many small moving things (an aquarium) the plain loss is won by drawing
    the empty background: the VAE never encoded the fish and all 8 streams showed one still
    tank (collapse, diff_energy 16x the band); with 10 the dream swims (1.0-1.5x on four of
    the five metrics). On the lava lamp it cost a little (one seed each; docs/fidelity.md)."""
    colour_table: int = 33
    """Side of the decoder's colour calibration table (models/calibration.py; 0 = off): after
    the VAE stage, a G x G x G colour lookup fitted so that the decoder's reconstructions of
    training frames take the colours of those frames, applied to every decoded frame. The
    decoder's blur mixes colours the footage never shows. Fitted on four trained runs'
    VAEs, 1,000-step dreams: color_hist 2.5x -> 1.8x the real band (lava), 3.6x -> 2.2x
    (eruption), 2.5x -> 1.3x (goop), 2.6x -> 1.4x (interference), unchanged on the
    aquarium (the identity kept); other metrics within noise (docs/fidelity.md)."""
    still_snap: float = 0.08
    """Tolerance of the still background (models/calibration.py; 0 = off): on pixels where
    the training footage leaves its median frame in under 5% of frames, a decoded colour
    within this of the median frame becomes it. A decoder redraws the whole frame every
    step, so the room around a lava lamp shimmers: on the lamp's reconstructions flow_hist
    went from 2.9x to 2.0x the band and color_hist from 1.4x to 1.1x; the fire, the blobs,
    the waves (no still pixels) unchanged, the aquarium a little better (docs/fidelity.md)."""
    patch_detail: int = 8
    """Side in pixels of the patches that bring real detail back into decoded frames
    (models/calibration.py, PatchBank; 0 = off; at most `size`): after the VAE stage, a bank
    of training frames and the decoder's drawing of each is kept with the model; every
    overlapping patch of a decoded frame is matched among the drawn patches at its place and
    gains the real patch's difference from its drawing (example-based super-resolution).
    The decoder blurs small fast things away (its reconstructions of real footage hold a
    third to a half of the temporal spectrum's fast end); see docs/fidelity.md."""
    patch_bank: int = 1024
    """Training frames in the patch bank, spread evenly (kept with the model as two uint8
    frames each: 25 MB at 64x64 for 1,024)."""
    still_hold: int = 5
    """Grey levels (0-255) below which a shown pixel holds still (rollout.hold_still; 0 = off):
    a decoded pixel that moved by less than this in every channel from what the stream last
    showed keeps that. A decoder redraws the whole frame every step, so everything of a
    lamp moves a little (its dream's optical flow: 57% of pixels still against the real
    lamp's 65%); a camera's still pixels stay still. 3 took one lamp dream's flow_hist from
    4.0x to 2.6x the band. 5 since the seventeenth session (docs/fidelity.md): the lamp's
    dreams still had fewer still pixels than its footage (flow below 2^-6 px/frame 63%
    against 65%) and more sub-pixel shimmer; 3 -> 5 took the lamp's expected flow_hist
    (32 streams) from 1.81 / 1.53 / 1.49 to 1.54 / 1.38 / 1.38 at t = 16 / 128 / 1k (its
    colour +0.01-0.03) and moved no expected ratio of the fire, the waves, goop or the
    aquarium by more than 0.02; no frozen flag over 100,000 steps on two lamps. 8 was
    measured and not kept (ninth session): the lamp's flow at t = 1k 2.79 -> 1.62 (seed 0)
    and 2.58 -> 1.50 (seed 2), but over 100,000 steps seed 0 gained a frozen flag (a calm
    phase held still for 6 steps) and seed 2's flow at t = 100k went 1.10 -> 1.94. Playback
    and `everloop eval` hold alike (a window of an eval's sparse stream starts from its own
    first frame). A run plays with the value it was trained with (its config.json)."""
    free_bits: float = 0.5
    """Nats per latent dim that the KL may use for free (World Models' kl_tolerance 0.5):
    without it the KL pushes unused dims onto the prior and the VAE blurs details away."""
    vae_batch: int = 32
    """Frames per VAE step."""
    lr_vae: float = 1e-3
    """Adam learning rate of the VAE (World Models: 1e-4 over far more steps)."""
    rnn_type: str = "lstm"
    """'lstm' (World Models), 'gru', or 'convlstm' (conv_dynamics.py; needs latent_grid): a
    convolutional LSTM and flow head over the map of latent cells, so that a move in the
    frame is a move across the map."""
    rnn_hidden: int = 256
    """Hidden size of the RNN (World Models: 256); with 'convlstm', channels per latent cell."""
    mixtures: int = 5
    """Gaussians per latent dim in the MDN head (World Models: 5)."""
    rnn_dropout: float = 0.5
    """Dropout on the RNN's input latents and on its output before the MDN head, in training
    only (Zaremba et al. 2014: the non-recurrent connections). A 2-minute clip is ~600
    latents at stride 6, which the RNN learns by heart: with none, its next-latent NLL on
    the held-out tail of goop was 37.9 nats per dim (3.2 with 0.3), and its dreams replayed
    stretches of the clip: loops of 136-272 steps in 5 of 8 streams, two streams on one
    trajectory; with 0.3 neither in 10,000 steps (docs/fidelity.md). 0.3 still let the
    dream follow the clip: in 60-80% of a dream's steps its nearest training moment is the
    one after the previous step's (bench/rnn_replay.py; unseen footage: 0-17%), and the
    aquarium failed on a loop (a stretch replayed frame for frame 266 steps later) in two
    trainings. With 0.5, the same VAEs and RNN steps (eleventh session): the aquarium
    passes every metric at every horizon with no flag, goop's loop, the lamp's loop and
    twins and the fire's flow at t = 10k are gone, the lamp's held-out NLL 1.88 -> 1.26 and
    2.17 -> 1.00; but the lamp's flow and colour at t = 10k / 100k got worse on both seeds
    (a 10-minute clip needs less), and colour on the fire and the waves (docs/fidelity.md)."""
    dream_head: str = "flow"
    """What draws a dream's next latent from the RNN's hidden state: 'mdn' (World Models:
    the mixture head, each latent dimension drawn on its own) or 'flow' (flow_head.py: a
    flow-matching MLP trained after the RNN, in a stage of its own, on the frozen RNN's
    hidden states over the training footage; it draws all dimensions together). The MDN
    head is trained either way (the RNN learns through it; held-out NLL is its). Measured
    on the same RNNs (thirteenth session, docs/fidelity.md): the MDN's per-dimension draws
    land off the encoder's latents, and the decoder draws those with less contrast."""
    flow_share: float = 0.04
    """Share of the --steps / --minutes budget the RNN's stage leaves for the flow head's
    (dream_head 'flow'), whose length is `flow_head_epochs`: ~70 s of a 30-minute budget,
    what the 10-minute lava lamp's ~9,600 updates and their pairs take on one core (a
    2-minute clip's ~2,000: 11-21 s measured, and its run ends that much earlier)."""
    flow_head_epochs: float = 150.0
    """Passes over the flow head's training pairs (one per training latent and stride
    phase, up to 65,536) in its stage, whatever the budget: ceil(epochs x pairs /
    flow_batch) updates; 0 = `flow_head_updates`. Why passes, not a count: what the head
    learns too long is its clip (below), and a longer clip takes longer to learn by heart.
    The 2-minute dev clips (~3,400 pairs) get the ~2,000 updates measured best for them;
    the 10-minute lamp (16,422 pairs) gets 9,622, where 2,000 left its dream moving
    unlike the footage: expected flow_hist 2.67 / 2.32 / 2.19x the band at t = 16 / 128 /
    1k with 2,000, 1.73 / 1.54 / 1.69x with 9,622, and colour 1.57-1.72x -> 1.34-1.49x
    (the same RNN); goop at 4x its passes moved worse at t = 1k (diff_energy 2.6 -> 3.6x;
    sixteenth session, docs/fidelity.md)."""
    flow_head_updates: int = 2000
    """Updates of the flow head in its stage when `flow_head_epochs` is 0 (every run saved
    before the sixteenth session), whatever the budget (a stage of fixed length:
    a share of a 7-minute budget was 4 trainer steps, of a GPU's 30 minutes thousands).
    Measured on the same RNNs (fourteenth session, docs/fidelity.md; 100,000 steps, 8
    streams): at 5,000 the aquarium's dream followed its clip in 60% of steps and flagged
    a loop and twins, and the waves' colour missed at t = 10k (1.86x); at 2,000 both pass
    every metric with no flag (the clip followed in 47%); the fire passes at 5,000 and
    misses colour at t = 1k at 2,000 (1.92x). The head's loss on held-out pairs is lowest
    after 400-800 updates and rises from there (it learns the clip, not the process)."""
    flow_updates: int = 40
    """Flow-head updates (each a batch of flow_batch pairs) in one trainer step: a small MLP
    step costs ~5 ms on one core, an RNN step ~0.2 s, so a trainer step of either stage
    costs about the same (the progress bar's rate and ETA mean the same in both)."""
    flow_width: int = 256
    """Width of the flow head's three hidden layers."""
    flow_steps: int = 16
    """Euler steps per drawn latent (each one pass of the flow head's MLP)."""
    flow_batch: int = 256
    """(hidden state, next latent) pairs per flow-head step."""
    fit_dream: bool = True
    """After the RNN stage, fit the dream's sampling to the footage (worldmodel_fit.fit_dream):
    a scale of every mixture sigma and a memory of the sampling noise (each step's draws are
    rho x the last ones + sqrt(1 - rho^2) x fresh ones), chosen from a small grid so that
    dreamt latents move like the training footage's (RMS latent displacement at lags of 1,
    2, 4 and 8 steps and the 99th percentile of one step). Why: trained with dropout the
    mixture is wider than the RNN's errors in a dream without it, and fresh noise in every
    step is a jitter the footage has not: on the lamp (seed 0) a dream's latent steps were
    1.5x the footage's, with no memory from one step to the next (the real steps' cosine
    with the previous one is +0.82, the dream's 0.0), which eval flags as flicker and
    counts in flow_hist (docs/fidelity.md). `--temperature` applies on top, as before."""
    dream_colours: bool = True
    """After the dream fit, fit the colour table again (worldmodel_fit.fit_dream_colours) on
    dreams as they are played, not on reconstructions; kept only where it beats the
    reconstructions' table on two other sets of dreams. Why: a dream's latents lie off the encoder's, and
    the decoder draws them with less contrast: the waves' dreams had fewer of the footage's
    saturated crests (color_hist 4.2-4.7x the band at every horizon with the reconstructions'
    table; with the dreams', 100,000 steps, 1.0-1.4x on one training and 1.5-1.8x on
    another). On the lamp (3 seeds), the fire, goop and an aquarium run the dreams' table was
    not kept, so they dream as before; a fresh aquarium kept one (docs/fidelity.md). The
    dreams continue training moments spread over the footage, as the eval's streams do (from
    the prior, their first ~150 steps drew colours no played stream draws, and the fire's and
    the waves' tables fitted on those missed colour at 100,000 steps). ~1 minute on one core
    at the end of training."""
    sigma_min: float = 0.01
    """Soft floor on every mixture sigma: a sigma shrinking to 0 drives the NLL to -inf
    (the World Models PyTorch port saw -1e22); latents are O(1), so 0.01 is fine-grained."""
    mirror: str = "off"
    """'on': the VAE, the RNN and the flow head also train on the footage's left-right
    mirror image (each frame or window of a batch by a coin flip); 'off': the footage only;
    'auto': mirror where the footage has no left and right, i.e. its mean and std images
    change less under a mirror than from its first half to its second
    (worldmodel_fit.mirror_symmetric; the run's log says which and why: goop, the fire and
    the aquarium would be, the lava lamp, the waves and Ms. Pac-Man not). Meant for short
    clips that the RNN learns by heart (a 2-minute clip is ~600 RNN steps); measured with
    'auto', which mirrored both (twentieth session, docs/fidelity.md, 30 minutes, seed 0):
    goop's and the aquarium's dreams got worse by t = 1k (goop's frame energy 2.6x -> 5.1x
    the band, the aquarium's spectrum 0.8x -> 1.6x): in the same budget the VAE and the
    RNN fit twice the footage less well. So 'off' by default."""
    seq_len: int = 32
    """Latent steps per RNN training window (truncated BPTT)."""
    clip_stride: int = 6
    """Real frames between two RNN steps: at 30 fps, 6 gives 5 steps a second and visible
    motion per step (a lava lamp barely moves in one frame, and the RNN would learn z' = z)."""
    stride_jitter: int = 0
    """RNN training windows step every clip_stride +- k frames, k drawn per window from
    [-stride_jitter, stride_jitter]: the same process played a little faster or slower, so
    a short clip's latent steps cannot be learned by heart as one fixed sequence (a time
    stretch of a video texture; 0 = every window at clip_stride, as every run before).
    Measured at 1 (twelfth session, docs/fidelity.md): the aquarium's dream follows its clip
    in 31% of steps instead of 42% and still passes every metric; goop's flow got worse at
    every horizon (2.3-3.1x against 1.8-2.5x), and the lamp's at t = 10k / 100k (with dropout
    0.3, both seeds), so the default stays 0."""
    rnn_batch: int = 64
    """Windows per RNN step."""
    lr_rnn: float = 1e-3
    """Adam learning rate of the MDN-RNN."""
    grad_clip: float = 1.0
    """Max gradient norm of the RNN (World Models: 1.0); 0 = no clipping."""
    context_noise: float = 0.1
    """Std of Gaussian noise added to the RNN's input latents (not its targets) in training.
    In a dream the inputs are the RNN's own samples, a little off the data; trained on
    exact inputs only, it has never seen such errors and they compound into drift."""
    self_feed: float = 0.25
    """Share of RNN input steps replaced by a sample from the model's own previous
    prediction (scheduled sampling: training on its own rollouts). ~1.5x slower per step (a
    step loop); the target stays the real next latent, so a high share pulls predictions to
    the mean. On lava64c (the same VAE, 15-minute RNNs) 0.25 removed the loops of 0 (longest
    loop run 2 against 62) and brought diff_energy from 2.17x to 1.18x the band."""
    posterior_noise: float = 0.35
    """RNN windows hold z = mu + posterior_noise * sigma_post * eps per frame: 1 = World
    Models' posterior samples, 0 = the posterior means. The posterior noise in every target
    teaches the mixture sigmas that size, and a dream re-rolls it each step (the background
    shimmers, flow 5x the real band); with none the dream falls into loops and the streams
    collapse into one. 0.35 had neither in 10,000 steps (docs/worldmodel.md)."""
    vae_share: float = 0.5
    """Share of the --steps / --minutes budget for the VAE; the RNN gets the rest."""
    holdout: float = 0.05
    """Tail of every episode kept out of training: held-out reconstruction PSNR and RNN
    NLL are measured there (logged as heldout_*)."""
    seed_frames: int = 8
    """Real frames (clip_stride apart) that `generate --seed-clip` encodes to warm up the RNN."""
    burn_in: int = 16
    """RNN steps a dream from the prior runs before its first frame is shown: a draw from
    N(0, I) is rarely a latent the RNN knows, its first steps settle onto the data."""
    hidden_refresh: int = 0
    """Every K dream steps the RNN's state is rebuilt from zero over the stream's last
    `seed_frames` latents, as a seed clip warms it up (0 = never: one state for the whole
    dream, as every run before). Why: the RNN trains on windows of `seq_len` steps that
    start from a zero state, so a state K + seed_frames steps old at most is one of the
    ages it has seen; a 10,000-step dream otherwise runs on a state 10,000 steps old.
    Measured (twenty-fourth session, docs/fidelity.md): at 64 both lamps' t = 10k cells
    better (colour 1.72 / 1.74 -> 1.49 / 1.55x the band, frame energy by 0.5), the fire's
    colour worse at 32, 64 and 128 (t = 10k 1.41 -> 1.60 at 64), so 0 by default."""


PRESETS: dict[str, dict] = {
    "default": {},
    # `make demo` (7 minutes on 2 cores): the default recipe; the flow stage's length is its
    # updates, not a share of the budget (at 1.5% of 7 minutes it was 4 trainer steps and the
    # demo's lamp moved 0.63x the real clip at lag 300; the thirteenth session gave it 12%).
    "demo": {},
    # Tests: 16x16 frames, width 8, tiny RNN; every frame a step, nothing held out; no dream
    # fit (its 20 x 300 dream steps would double a tiny run; tests/test_dream_fit.py sets it).
    "tiny": {"size": 16, "z_dim": 8, "vae_width": 8, "rnn_hidden": 16, "mixtures": 3, "vae_batch": 8, "seq_len": 6,
                 "rnn_batch": 8, "clip_stride": 1, "holdout": 0.0, "seed_frames": 2, "burn_in": 2, "fit_dream": False,
             "flow_width": 16, "flow_steps": 4, "flow_batch": 16, "flow_share": 0.25, "flow_updates": 2, "flow_head_updates": 4,
             "flow_head_epochs": 0.0,
                 "dream_colours": False},
}


def check(cfg: WorldModelConfig, pixel_losses) -> None:
    """Refuse values the model cannot run with, in one line naming the option."""
    if cfg.recon_loss not in pixel_losses:
        raise EverloopError(f"recon_loss {cfg.recon_loss!r}: use {', '.join(pixel_losses)}")
    if cfg.colour_table == 1 or cfg.colour_table > 129:
        raise EverloopError(f"colour_table {cfg.colour_table}: use 0 (off) or a table side from 2 to 129 (default 33)")
    if not 0 <= cfg.patch_detail <= cfg.size or cfg.patch_detail and cfg.patch_bank < 1:
        raise EverloopError(f"patch_detail {cfg.patch_detail} / patch_bank {cfg.patch_bank}: the side is "
                            f"0 (off) to size ({cfg.size}), the bank at least 1 frame")
    if not 0 <= cfg.stride_jitter < cfg.clip_stride:
        raise EverloopError(f"stride_jitter {cfg.stride_jitter}: use 0 (off) to clip_stride - 1 ({cfg.clip_stride - 1})")
    if not 0 <= cfg.still_hold <= 32:  # past a few grey levels a slow scene would stop
        raise EverloopError(f"still_hold {cfg.still_hold}: use 0 (off) to 32 grey levels (default 5)")
    if cfg.rnn_type == "convlstm" and not cfg.latent_grid:
        raise EverloopError("rnn_type 'convlstm' needs a spatial latent: set latent_grid (e.g. 8, with z_dim 256)")
    if not 0 <= cfg.hidden_refresh <= 1_000_000:
        raise EverloopError(f"hidden_refresh {cfg.hidden_refresh}: use 0 (never) or the dream steps between two warm-ups")
    if cfg.mirror not in ("auto", "on", "off"):
        raise EverloopError(f"mirror {cfg.mirror!r}: use 'auto', 'on' or 'off'")
    if cfg.dream_head not in ("mdn", "flow"):
        raise EverloopError(f"dream_head {cfg.dream_head!r}: use 'mdn' or 'flow'")
    if not 0 <= cfg.flow_head_epochs < 1e6:
        raise EverloopError(f"flow_head_epochs {cfg.flow_head_epochs}: use 0 (flow_head_updates) or a positive number")
    if min(cfg.flow_steps, cfg.flow_width, cfg.flow_updates, cfg.flow_head_updates) < 1 or not 0 <= cfg.flow_share < 1:
        raise EverloopError(f"flow_steps {cfg.flow_steps} / flow_width {cfg.flow_width} / flow_updates "
                            f"{cfg.flow_updates} / flow_head_updates {cfg.flow_head_updates} / flow_share "
                            f"{cfg.flow_share}: at least 1 each, the share in [0, 1)")
