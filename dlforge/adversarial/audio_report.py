"""How the audit's HTML report shows sound: waveforms, spectrograms, and the clips themselves to listen to.

A gallery item of an audio model holds waveforms ``(1, samples)`` where an image model's holds images.
Each item becomes one figure (clean and adversarial waveform with the perturbation, and their log
spectrograms) and two ``<audio>`` players whose WAV data is embedded in the page, so a person hears what
the model heard.
"""

from __future__ import annotations

import base64
import html

import numpy as np

from dlforge.reporting import png_base64


def is_audio_item(item: dict, key: str) -> bool:
    arr = np.asarray(item.get(key, []))
    return arr.ndim == 2 and arr.shape[0] == 1 and arr.shape[1] >= 1024


def spectrogram(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Log power spectrogram ``(bins, frames)`` in dB of a waveform (Hann window)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    window = np.hanning(n_fft)
    frames = max(1, 1 + (len(x) - n_fft) // hop)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[np.minimum(idx, len(x) - 1)] * window, axis=1)) ** 2
    return 10 * np.log10(spec.T + 1e-10)


def audio_tag(x: np.ndarray, sample_rate: int, label: str) -> str:
    from dlforge.data.wav import wav_bytes

    data = base64.b64encode(wav_bytes(np.asarray(x).reshape(-1), sample_rate)).decode("ascii")
    return (f'<figure style="display:inline-block;margin:4px"><figcaption>{html.escape(label)}</figcaption>'
            f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio></figure>')


def pair_png(clean: np.ndarray, adversarial: np.ndarray, sample_rate: int, title: str) -> str:
    """Waveforms (with the perturbation) and spectrograms of a clean clip and its adversarial version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean, adversarial = np.asarray(clean).reshape(-1), np.asarray(adversarial).reshape(-1)
    t = np.arange(len(clean)) / sample_rate
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.4))
    axes[0].plot(t, clean, lw=0.5, color="black", label="clean")
    axes[0].plot(t, adversarial - clean, lw=0.5, color="crimson", label="perturbation")
    axes[0].set_xlabel("s")
    axes[0].legend(fontsize=6, loc="upper right")
    top = max(spectrogram(clean).max(), spectrogram(adversarial).max())
    for ax, x, name in ((axes[1], clean, "clean"), (axes[2], adversarial, "adversarial")):
        ax.imshow(spectrogram(x), origin="lower", aspect="auto", vmin=top - 80, vmax=top, cmap="magma",
                  extent=(0, len(x) / sample_rate, 0, sample_rate / 2000))
        ax.set_title(f"{name} spectrogram", fontsize=8)
        ax.set_xlabel("s")
        ax.set_ylabel("kHz")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return png_base64(fig)


def budget_text(eps: float, peak: float | None) -> str:
    """An L-inf budget as a listener reads it: dB_x relative to the clips' ``peak`` (with the eps), else the eps."""
    if peak and eps > 0:
        from dlforge.data.wav import db_from_eps

        return f"{db_from_eps(eps, peak):.0f} dB_x (eps {eps:.3g})"
    return f"eps {eps:g}"


def gallery_html(items: list[dict], sample_rate: int, *, clean: str = "clean", adversarial: str = "adversarial",
                 caption=None, peak: float | None = None) -> str:
    """One figure and two players per item (``caption(item)``: its title; by default the attack, its budget in
    dB_x when the clips' ``peak`` is given, and what the model heard before and after)."""
    out = []
    for item in items:
        title = caption(item) if caption else (f"{item.get('attack', '')} {budget_text(item.get('eps', 0), peak)}: "
                                               f"heard {item.get('clean_prediction')} -> "
                                               f"{item.get('adversarial_prediction')}")
        png = pair_png(item[clean], item[adversarial], sample_rate, title)
        out.append(f'<div><img alt="{html.escape(title)}" src="data:image/png;base64,{png}"><br>'
                   f'{audio_tag(item[clean], sample_rate, "clean")}'
                   f'{audio_tag(item[adversarial], sample_rate, "adversarial")}</div>')
    return "\n".join(out)
