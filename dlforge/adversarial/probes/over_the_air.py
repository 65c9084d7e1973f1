"""Audio adversarial examples over the air: do they survive a loudspeaker, a room and a microphone?"""

from __future__ import annotations

from dlforge.adversarial.probes.base import PROBES
from dlforge.adversarial.probes.physical import PhysicalWorld
from dlforge.errors import InputError


class AirChain:
    """A random loudspeaker-room-microphone chain on waveforms ``(N, 1, T)`` (torch, differentiable):

    - band-pass: a small loudspeaker and a phone microphone pass about ``low``-``high`` Hz (each edge drawn
      within a factor 1.5), an ideal filter applied in the frequency domain;
    - a room impulse response: a direct path, then exponentially decaying Gaussian reverberation with RT60 drawn
      in ``rt60`` seconds (the statistical model of a diffuse field, Schroeder's; the reverberant energy is
      drawn from 0.1 to 0.5 of the direct path's);
    - a delay of up to ``shift`` seconds (the clip is not aligned with the recording), a gain of 0.7-1.0;
    - microphone noise at an SNR drawn in ``snr`` dB.
    """

    def __init__(self, sample_rate: int, low: float = 200.0, high: float = 6000.0, rt60=(0.05, 0.3),
                 snr=(20.0, 40.0), shift: float = 0.05):
        self.sample_rate, self.low, self.high = sample_rate, low, high
        self.rt60, self.snr, self.shift = rt60, snr, shift

    def describe(self) -> str:
        return (f"band-pass ~{self.low:g}-{self.high:g} Hz (edges x/÷1.5), room reverberation RT60 {self.rt60[0]:g}-"
                f"{self.rt60[1]:g} s, delay <= {self.shift * 1000:g} ms, gain 0.7-1.0, noise {self.snr[0]:g}-"
                f"{self.snr[1]:g} dB SNR")

    def __call__(self, x, generator, value_range):
        import torch

        n, _, t = x.shape
        u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
        freqs = torch.fft.rfftfreq(2 * t, 1 / self.sample_rate)
        low = self.low * 1.5 ** (u(n, 1) * 2 - 1)
        high = self.high * 1.5 ** (u(n, 1) * 2 - 1)
        band = ((freqs[None] >= low) & (freqs[None] <= high)).to(x.dtype)
        # room impulse response, 0.4 s long at most
        length = int(0.4 * self.sample_rate)
        time = torch.arange(length, dtype=x.dtype) / self.sample_rate
        rt60 = self.rt60[0] + (self.rt60[1] - self.rt60[0]) * u(n, 1)
        tail = torch.randn(n, length, generator=generator) * torch.exp(-6.9 * time[None] / rt60)
        tail[:, :int(0.002 * self.sample_rate)] = 0  # the first reflections arrive after the direct path
        energy = 0.1 + 0.4 * u(n, 1)
        tail = tail / tail.pow(2).sum(1, keepdim=True).sqrt().clamp_min(1e-12) * energy.sqrt()
        rir = torch.zeros(n, 2 * t, dtype=x.dtype)
        rir[:, :length] = tail
        rir[:, 0] = 1.0
        delay = (u(n) * self.shift * self.sample_rate).long()
        spectrum = torch.fft.rfft(x[:, 0], 2 * t) * torch.fft.rfft(rir, 2 * t) * band
        phase = torch.exp(-2j * torch.pi * freqs[None] * (delay[:, None] / self.sample_rate))
        out = torch.fft.irfft(spectrum * phase, 2 * t)[:, :t]
        out = out * (0.7 + 0.3 * u(n, 1))
        power = out.pow(2).mean(1, keepdim=True).detach()
        snr = self.snr[0] + (self.snr[1] - self.snr[0]) * u(n, 1)
        out = out + torch.randn(n, t, generator=generator) * (power / 10 ** (snr / 10)).sqrt()
        lo, hi = value_range
        return out.clamp(lo, hi)[:, None]


@PROBES.register("over-the-air")
class OverTheAir(PhysicalWorld):
    """PGD vs EOT-PGD audio examples through a random loudspeaker, room and microphone: the share that survives.

    The audio analogue of the ``physical`` probe (whose measures it keeps: *fooled after chain*, the headline,
    and *survival*, one minus Kurakin et al.'s destruction rate). Carlini & Wagner's 2018 examples were
    crafted for a direct input; Yakura & Sakuma ("Robust Audio Adversarial Example for a Physical Attack",
    IJCAI 2019, https://arxiv.org/abs/1810.11793) made them survive playback by Expectation over
    Transformation over band-pass filters, impulse responses and noise, as here (:class:`AirChain`). The
    clean accuracy through the chain is the control.

    Args:
        db: budget in dB_x (Carlini & Wagner; default -30). steps, eot_samples, draws, points, seed: as
            ``physical``. low, high: the band-pass edges in Hz (default 200, 6000). rt60_max: longest
            reverberation time in s (default 0.3). snr_min: lowest SNR in dB (default 20).
    """

    name = "over-the-air"
    modalities = ("audio",)
    option_ranges = {"db": (float("-inf"), 0, True), "low": (0, None, True), "high": (0, None, True),
                     "rt60_max": (0, None, True), "snr_min": (float("-inf"), None, True)}

    def __init__(self, *, db: float = -30.0, steps: int = 40, eot_samples: int = 8, draws: int = 10, points: int = 100,
                 low: float = 200.0, high: float = 6000.0, rt60_max: float = 0.3, snr_min: float = 20.0,
                 seed: int = 0):
        super().__init__(eps=1.0, steps=steps, eot_samples=eot_samples, draws=draws, points=points, seed=seed)
        self.db = db
        self.air = dict(low=low, high=high, rt60=(min(0.05, rt60_max), rt60_max), snr=(snr_min, snr_min + 20))

    def prepare(self, run) -> None:
        from dlforge.data.wav import eps_from_db

        info = run.engines[0].info
        rate = int(info.audio.get("sample_rate", 16000))
        if run.x.shape[-1] < 0.5 * rate:
            raise InputError(f"over-the-air convolves with a room response of up to 0.4 s; the clips are "
                             f"{run.x.shape[-1] / rate:.2f} s: use clips of at least 0.5 s")
        self.eps = eps_from_db(self.db, info.audio_peak)
        self.chain = AirChain(rate, **self.air)

    def transform(self, x, generator, value_range):
        return self.chain(x, generator, value_range)

    def probe(self, run, show) -> dict:
        section = super().probe(run, show)
        for row in section["rows"]:
            row["db"] = self.db
        section["notes"].append(f"budget {self.db:g} dB_x (eps {self.eps:.4g})")
        return section


__all__ = ["AirChain", "OverTheAir"]
