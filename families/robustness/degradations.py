"""The image degradations of Geirhos et al. (2017, 2018), batched in torch, with the papers' levels.

Each function takes images `x` (B, 3, H, W) float in [0, 1] (already centre-cropped) and returns (B, 3, H, W)
in [0, 1]. They follow `code/image_manipulation.py` of rgeirhos/generalisation-humans-DNNs (CC-BY-4.0)
operation by operation, including its quirks (named where they matter), so that a model sees what the human
observers saw:

    greyscale           skimage's rgb2gray weights (0.2125, 0.7154, 0.0721)
    contrast c          (1 - c) / 2 + c * grey                              (no clipping needed)
    uniform noise w     contrast 30 %, + U(-w, w), clip                     (the noise experiment's 30 %)
    salt-and-pepper p   contrast 30 %, + 1 where u >= 1 - p/2, - 1 where u < p/2, clip
    low-pass std s      grey, Gaussian filter (scipy: truncate 4, constant padding with 0.4423), clip
    high-pass std s     grey - low-pass(grey), mean shifted to 0.4423, clip (s = inf: no filter at all)
    phase scrambling w  grey, random phase shifts in [-w, w] degrees in the centred spectrum, real part, clip
    power equalisation  grey, amplitude spectrum := the mean spectrum of the paper's stimuli, clip
    rotation a          grey, rotated by a degrees counter-clockwise (np.rot90)
    false colour        colour, opponent colours (DKL) through the lab monitor's gamma table

Random degradations take one seed per image (see `image_seed`), so any split of the images across ranks
and any batch size gives the same images.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = Path(__file__).resolve().parent / "data"
GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)
"""skimage.color.rgb2gray (ITU-R BT.709 luma), as used by the paper's code."""
BG_GREY = 0.4423
"""Mean pixel value over the paper's images: padding and target mean of the low-/high-pass filters."""
NOISE_CONTRAST = 0.3
"""The noise experiments reduce contrast to 30 % before adding noise (Geirhos et al. 2018, Methods)."""
TRUNCATE = 4.0
"""scipy.ndimage.gaussian_filter's default: the kernel reaches int(4 * std + 0.5) pixels."""

# Cone sensitivities of the lab monitor's primaries and DKL opponent axes (Brainard 1996), from
# `get_opponent_colours` of the paper's code.
_M = np.array([[0.1619982647, 0.208049264, 0.0389347448],
               [0.0330275785, 0.2496504557, 0.0618343518],
               [0.0015524055, 0.0198861001, 0.1890224274]])
_WHITE = np.array([0.20449114, 0.17225619, 0.10523047])
_N = np.array([[9.27590805, 9.27590805, 0.0],
               [7.86421647, -9.33587662, 0.0],
               [-3.39709047, -3.39709047, 12.16230246]])


def image_seed(seed: int, key: str, degradation: str, level: str) -> int:
    """A 63-bit seed for one (image, degradation, level): reruns and rank splits give the same noise."""
    digest = hashlib.sha256(f"{seed}|{degradation}|{level}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _uniform(seeds: list[int], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """(B, *shape) uniform [0, 1) draws, image b from its own generator."""
    out = torch.empty((len(seeds), *shape), dtype=dtype)
    for b, s in enumerate(seeds):
        out[b] = torch.rand(shape, generator=torch.Generator().manual_seed(s), dtype=dtype)
    return out


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luminance."""
    w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _rgb(g: torch.Tensor) -> torch.Tensor:
    return g.expand(-1, 3, -1, -1).contiguous()  # (B, 1, H, W) -> (B, 3, H, W), the stacked grey image


def greyscale(x: torch.Tensor) -> torch.Tensor:
    return _rgb(grey(x))


def contrast(x: torch.Tensor, level: float) -> torch.Tensor:
    """`grayscale_contrast`: level in [0, 1], 1 = full contrast; the mean grey moves towards 0.5."""
    return _rgb((1 - level) / 2 + level * grey(x))


def uniform_noise(x: torch.Tensor, width: float, seeds: list[int]) -> torch.Tensor:
    """`uniform_noise(image, width, contrast_level=0.3, rng)`: one noise field per image, same in all channels."""
    g = (1 - NOISE_CONTRAST) / 2 + NOISE_CONTRAST * grey(x)  # (B, 1, H, W)
    noise = _uniform(seeds, tuple(g.shape[1:]), g.dtype).to(g.device) * (2 * width) - width
    return _rgb((g + noise).clamp(0, 1))


def salt_and_pepper(x: torch.Tensor, p: float, seeds: list[int]) -> torch.Tensor:
    """`salt_and_pepper_noise(image, p, contrast_level=0.3, rng)`: a fraction p of pixels set to 0 or 1."""
    g = (1 - NOISE_CONTRAST) / 2 + NOISE_CONTRAST * grey(x)
    u = _uniform(seeds, tuple(g.shape[1:]), g.dtype).to(g.device)
    g = g + (u >= 1 - p / 2).to(g.dtype) - (u < p / 2).to(g.dtype)
    return _rgb(g.clamp(0, 1))


@cache
def _gauss_kernel(std: float) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian weights (float64), radius int(truncate * std + 0.5)."""
    radius = int(TRUNCATE * std + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / std) ** 2)
    return k / k.sum()


def gaussian_blur(g: torch.Tensor, std: float, cval: float = BG_GREY) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(g, std, mode='constant', cval=cval) on (B, 1, H, W): separable, each
    1-D pass padded with `cval` (torchvision's gaussian_blur pads by reflection, which is not the paper's)."""
    if std == 0:
        return g
    k = _gauss_kernel(float(std)).to(g)
    r = (k.numel() - 1) // 2
    g = F.conv2d(F.pad(g, (0, 0, r, r), value=cval), k.view(1, 1, -1, 1))  # along H
    return F.conv2d(F.pad(g, (r, r, 0, 0), value=cval), k.view(1, 1, 1, -1))  # along W


def low_pass(x: torch.Tensor, std: float) -> torch.Tensor:
    return _rgb(gaussian_blur(grey(x), std).clamp(0, 1))


def high_pass(x: torch.Tensor, std: float) -> torch.Tensor:
    """grey - low-pass(grey), then the per-image mean moved to 0.4423. std = inf is the limit: the infinitely
    wide low-pass of the constant-padded image is 0.4423 everywhere, so only the mean shift remains."""
    g = grey(x)
    new = g - (BG_GREY if math.isinf(std) else gaussian_blur(g, std))
    new = new + (BG_GREY - new.mean(dim=(2, 3), keepdim=True))
    return _rgb(new.clamp(0, 1))


def rotation(x: torch.Tensor, degrees: int) -> torch.Tensor:
    """`rotate90/180/270`: grey, rotated counter-clockwise (rotate90 = transpose then flip rows = np.rot90)."""
    return _rgb(torch.rot90(grey(x), k=(degrees // 90) % 4, dims=(2, 3)))


def _centred_spectrum(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.fft.fftshift(torch.fft.fft2(g.double()), dim=(-2, -1))
    return f.abs(), f.angle()


def _inverse(amp: torch.Tensor, phase: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    f = torch.fft.ifftshift(torch.polar(amp, phase), dim=(-2, -1))
    return torch.fft.ifft2(f).real.clamp(0, 1).to(dtype)


def phase_scrambling(x: torch.Tensor, width: float, seeds: list[int]) -> torch.Tensor:
    """`scramble_phases`: in the centred spectrum without its first row and column, the first half of the
    flattened phases gets +shift_i and the second half (after the DC term) -shift_i, shift_i uniform in
    [-width, width] degrees. As in the paper's code the second half is not mirrored, so the shifted spectrum
    is not Hermitian; its real part is kept. Needs even H and W (a centred DC term)."""
    amp, phase = _centred_spectrum(grey(x))  # (B, 1, H, W)
    B, _, H, W = phase.shape
    sub = phase[:, 0, 1:, 1:].reshape(B, -1).clone()  # (B, L), L = (H-1)(W-1), odd
    half = sub.shape[1] // 2
    shifts = (_uniform(seeds, (half,), torch.float64).to(sub.device) - 0.5) * (2 * width / 180 * math.pi)
    sub[:, :half] += shifts
    sub[:, half + 1:] -= shifts
    phase = phase.clone()
    phase[:, 0, 1:, 1:] = sub.view(B, H - 1, W - 1)
    return _rgb(_inverse(amp, phase, x.dtype))


@cache
def mean_power_spectrum() -> torch.Tensor:
    """(224, 224) mean amplitude spectrum (centred) of the paper's greyscale stimuli
    (`code/mean_power_spectrum_grey.npy`, stored here as float32)."""
    return torch.from_numpy(np.load(DATA_DIR / "mean_power_spectrum_grey.npy").astype(np.float64))


def power_equalisation(x: torch.Tensor) -> torch.Tensor:
    """`equalise_power_spectrum`: grey image's phases with the mean amplitude spectrum (224 x 224 images)."""
    _, phase = _centred_spectrum(grey(x))
    return _rgb(_inverse(mean_power_spectrum().to(phase.device), phase, x.dtype))


@cache
def gamma_table() -> torch.Tensor:
    """(256,) the lab monitor's measured output for pixel values 0..255 (`code/x_gamma_function.npy`)."""
    return torch.from_numpy(np.load(DATA_DIR / "x_gamma_function.npy").reshape(-1).astype(np.float64))


def false_colour(x: torch.Tensor) -> torch.Tensor:
    """`false_colour`: monitor gamma -> cone activations -> DKL, invert the L-M and S-(L+M) axes -> back;
    the result is mapped back to the nearest of the 256 pixel values through the gamma table."""
    table = gamma_table().to(x.device)
    xi = (x.double() * 255).round().long().clamp(0, 255)  # the paper's images are 8-bit: exact indices
    lin = table[xi].permute(0, 2, 3, 1)  # (B, H, W, 3) monitor output
    M, N = torch.from_numpy(_M).to(lin), torch.from_numpy(_N).to(lin)
    white = torch.from_numpy(_WHITE).to(lin)
    dkl = (lin @ M.T - white) @ N.T
    dkl = dkl * torch.tensor([1.0, -1.0, -1.0], dtype=lin.dtype, device=lin.device)
    rgb = ((dkl @ torch.linalg.inv(N).T + white) @ torch.linalg.inv(M).T).clamp(0, 1)
    # nearest table entry (the table is monotonic): searchsorted, then the closer of the two neighbours
    hi = torch.searchsorted(table, rgb.contiguous()).clamp(1, 255)
    lo = hi - 1
    nearest = torch.where((rgb - table[lo]).abs() <= (table[hi] - rgb).abs(), lo, hi)
    return (nearest.to(x.dtype) / 255).permute(0, 3, 1, 2).contiguous()
