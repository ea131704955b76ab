"""Numpy ports of rgeirhos/generalisation-humans-DNNs `code/image_manipulation.py` (CC-BY-4.0), used as the
reference the torch implementations are checked against (skimage's rgb2gray written out)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

BG = 0.4423


def rgb2gray(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.2125, 0.7154, 0.0721])


def low_pass_filter(image: np.ndarray, std: float) -> np.ndarray:
    new = gaussian_filter(rgb2gray(image), std, mode="constant", cval=BG)
    return np.clip(new, 0, 1)


def high_pass_filter(image: np.ndarray, std: float) -> np.ndarray:
    g = rgb2gray(image)
    new = g - gaussian_filter(g, std, mode="constant", cval=BG)
    new = new + (BG - new.mean())
    return np.clip(new, 0, 1)


def scramble_phases(image: np.ndarray, phase_shifts: np.ndarray) -> np.ndarray:
    channel = rgb2gray(image)
    f = np.fft.fftshift(np.fft.fft2(channel))
    amp, phase = np.abs(f), np.angle(f)
    sub = phase[1:, 1:].flatten()
    n = sub.shape[0]
    sub[: n // 2] += phase_shifts
    sub[n // 2 + 1:] -= phase_shifts
    phase[1:, 1:] = sub.reshape(phase[1:, 1:].shape)
    new = np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * phase))).real
    return np.clip(new, 0, 1)


def equalise_power_spectrum(image: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
    f = np.fft.fftshift(np.fft.fft2(rgb2gray(image)))
    new = np.fft.ifft2(np.fft.ifftshift(spectrum * np.exp(1j * np.angle(f)))).real
    return np.clip(new, 0, 1)


def false_colour(image: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    M = np.array([[0.1619982647, 0.208049264, 0.0389347448],
                  [0.0330275785, 0.2496504557, 0.0618343518],
                  [0.0015524055, 0.0198861001, 0.1890224274]])
    white = [0.20449114, 0.17225619, 0.10523047]
    N = np.array([[9.27590805, 9.27590805, 0], [7.86421647, -9.33587662, 0], [-3.39709047, -3.39709047, 12.16230246]])
    x = (image * 255).round().astype(np.uint8)
    lin = gamma[x].reshape(image.shape)
    dkl = np.einsum("ij,klj->kli", N, np.einsum("ij,klj->kli", M, lin) - white)
    dkl[:, :, 1] *= -1
    dkl[:, :, 2] *= -1
    cones = np.einsum("ij,klj->kli", np.linalg.inv(N), dkl) + white
    rgb = np.clip(np.einsum("ij,klj->kli", np.linalg.inv(M), cones), 0, 1)
    nearest = np.abs(rgb[..., None] - gamma.reshape(1, 1, 1, -1)).argmin(-1)  # find_nearest_vec
    return nearest / 255
