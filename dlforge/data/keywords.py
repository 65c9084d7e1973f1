"""``keywords``: ten spoken command words synthesized at run time, the embedded default for audio models.

Google's Speech Commands (:mod:`dlforge.data.speech_commands`) is 2.3 GB and cannot be assumed on a fresh
machine; the test suite and the README's pipeline need speech without it. This module speaks its ten
command words (``yes no up down left right on off stop go``, the keywords of Speech Commands' standard task
and of Alzantot et al. 2018) with a formant synthesizer written in numpy, so nothing is installed or
downloaded and every machine makes the same clips from the same seed.

How a word is spoken (a source-filter model, as Klatt's 1980 synthesizer):

- a word is a sequence of phonemes: vowels, diphthongs and approximants (formant targets F1-F3, voiced),
  nasals (a low formant, weak), fricatives (shaped noise), plosives (a silent closure, a noise burst,
  aspiration);
- per 5 ms frame the formants move linearly through each phoneme's start and end targets and are smoothed
  across phonemes (coarticulation); the voiced source is a glottal pulse train at the speaker's pitch, the
  unvoiced source white noise;
- each frame's spectrum is the sources' spectra times the cascade of the formant resonators' magnitude
  responses (and a fricative's band), put back by overlap-add.

Every clip draws a speaker and a recording: pitch 85-255 Hz with a falling contour, vocal-tract length
(formants scaled 0.85-1.2), speaking rate (0.8-1.25), breathiness, onset within the second, and background
noise at 0-25 dB SNR. Clips are one second at 16 kHz, peak-normalized like every audio dataset
(:data:`dlforge.data.wav.PEAK`). What it is not: natural speech. A model trained on it is a model of these
voices; accuracy on Speech Commands needs training on Speech Commands.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from dlforge.data.dataset import DATASETS, Dataset, split_train_val
from dlforge.data.wav import PEAK, SAMPLE_RATE, audio_details, peak_normalize

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
CLIPS_PER_WORD = 240  # 2,400 clips: 1,728 train, 192 validation, 480 test
TEST_FRACTION = 0.2
SEED = 20260

_HOP = 80  # 5 ms frames
_FFT = 512

# Formant targets (Hz, adult male, after Peterson & Barney 1952 and Klatt 1980): (F1, F2, F3)
_V = {
    "i": (270, 2290, 3010), "e": (530, 1840, 2480), "^": (640, 1190, 2390), "a": (730, 1090, 2440),
    "o": (570, 840, 2410), "O": (480, 920, 2400), "U": (400, 1000, 2300), "I": (390, 1990, 2550),
    "au": (500, 900, 2350),
    "n": (250, 1200, 2300), "l": (380, 1000, 2800), "r": (420, 1300, 1600), "j": (270, 2300, 3000),
}
# A segment: (kind, duration ms, start formants, end formants, voicing, noise, noise band (lo, hi) Hz)
_S = "vowel"


def _vowel(ms, a, b=None, voicing=1.0):
    return ("voiced", ms, _V[a], _V[b or a], voicing, 0.0, None)


def _fric(ms, lo, hi, level, formants="a"):
    return ("noise", ms, _V[formants], _V[formants], 0.0, level, (lo, hi))


def _closure(ms, formants="a", voice_bar=0.0):
    return ("closure", ms, _V[formants], _V[formants], voice_bar, 0.0, None)


def _burst(ms, lo, hi, level, formants="a"):
    return ("noise", ms, _V[formants], _V[formants], 0.0, level, (lo, hi))


def _aspiration(ms, formants):
    return ("aspiration", ms, _V[formants], _V[formants], 0.0, 0.25, None)


PHONES = {
    "yes": [_vowel(60, "j", "j", 0.6), _vowel(170, "e"), _fric(150, 3800, 7800, 0.55, "e")],
    "no": [_vowel(80, "n", "n", 0.3), _vowel(260, "O", "U")],
    "up": [_vowel(180, "^"), _closure(80, "^"), _burst(15, 300, 2500, 0.35, "^"), _aspiration(30, "^")],
    "down": [_closure(40, "a", 0.08), _burst(12, 2500, 6000, 0.3), _vowel(240, "a", "au"), _vowel(90, "n", "n", 0.3)],
    "left": [_vowel(70, "l", "l", 0.55), _vowel(140, "e"), _fric(110, 1200, 7500, 0.18, "e"), _closure(50, "e"),
             _burst(20, 3500, 7800, 0.35, "e")],
    "right": [_vowel(80, "r", "r", 0.6), _vowel(230, "a", "I"), _closure(60, "I"), _burst(20, 3500, 7800, 0.35, "I")],
    "on": [_vowel(190, "a"), _vowel(110, "n", "n", 0.3)],
    "off": [_vowel(190, "o"), _fric(170, 1200, 7500, 0.18, "o")],
    "stop": [_fric(120, 3800, 7800, 0.55), _closure(50), _burst(15, 3500, 7800, 0.3), _vowel(160, "a"),
             _closure(70), _burst(15, 300, 2500, 0.3)],
    "go": [_closure(40, "O", 0.08), _burst(15, 1300, 2600, 0.35, "O"), _vowel(260, "O", "U")],
}
_BANDWIDTHS = np.array([80.0, 110.0, 160.0])


def synthesize(word: str, rng: np.random.Generator, *, sample_rate: int = SAMPLE_RATE, seconds: float = 1.0) -> np.ndarray:
    """One clip of ``word`` spoken by a random speaker into a random recording, float32, peak-normalized."""
    speaker = {
        "f0": rng.uniform(85, 255), "tract": rng.uniform(0.85, 1.2), "rate": rng.uniform(0.8, 1.25),
        "breath": rng.uniform(0.02, 0.15), "jitter": rng.uniform(0.94, 1.06, size=3),
    }
    frames = _frames(PHONES[word], speaker, rng)
    voice = _render(frames, speaker, rng, sample_rate)
    n = int(round(sample_rate * seconds))
    clip = np.zeros(n)
    room = n - len(voice)
    start = int(rng.integers(0, max(room, 0) + 1)) if room > 0 else 0
    clip[start:start + len(voice)] = voice[:n - start]
    snr_db = rng.uniform(0, 25)
    noise = rng.normal(size=n)
    noise = np.convolve(noise, [1.0, 0.7, 0.3], mode="same")  # a little colour: room and microphone
    power = np.mean(voice ** 2) if len(voice) else 1.0
    clip += noise * np.sqrt(power / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return peak_normalize(clip[None].astype(np.float32))[0]


def _frames(phones: list, speaker: dict, rng: np.random.Generator) -> dict:
    """Per-frame formants, voicing, noise level and noise band of a phoneme sequence."""
    hop_ms = 1000 * _HOP / SAMPLE_RATE
    formants, voicing, noise, bands, aspirate = [], [], [], [], []
    for kind, ms, start, end, av, an, band in phones:
        count = max(1, int(round(ms / speaker["rate"] * rng.uniform(0.9, 1.1) / hop_ms)))
        t = np.linspace(0, 1, count)[:, None]
        formants.append((1 - t) * np.array(start) + t * np.array(end))
        voicing.append(np.full(count, av))
        noise.append(np.full(count, an))
        bands.append(np.tile(band if band else (0, 0), (count, 1)))
        aspirate.append(np.full(count, kind == "aspiration"))
    f = np.concatenate(formants) * speaker["tract"] * speaker["jitter"]
    kernel = np.ones(5) / 5  # coarticulation: 25 ms smoothing of the formant tracks
    padded = np.pad(f, ((2, 2), (0, 0)), mode="edge")
    f = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(3)], 1)
    av = np.convolve(np.pad(np.concatenate(voicing), 1, mode="edge"), np.ones(3) / 3, mode="valid")
    return {"formants": f, "voicing": av, "noise": np.concatenate(noise), "band": np.concatenate(bands),
            "aspiration": np.concatenate(aspirate)}


def _render(frames: dict, speaker: dict, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Overlap-add synthesis: each frame's source spectra times its formant envelope."""
    count = len(frames["voicing"])
    n = (count + 3) * _HOP
    # voiced source: a pulse train at a falling pitch with 1% jitter
    f0 = speaker["f0"] * np.linspace(1.08, 0.9, n) * (1 + 0.01 * rng.normal(size=n))
    phase = np.cumsum(f0 / sample_rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    white = rng.normal(size=n)
    window = np.hanning(4 * _HOP + 1)[:-1]
    freqs = np.fft.rfftfreq(_FFT, 1 / sample_rate)
    out = np.zeros(n + _FFT)
    tilt = 1.0 / (1.0 + (freqs / 300.0) ** 2) ** 0.5  # glottal source roll-off, -6 dB per octave
    for i in range(count):
        lo = i * _HOP
        seg = slice(lo, lo + len(window))
        env = _envelope(frames["formants"][i], freqs)
        spectrum = np.zeros(len(freqs), dtype=complex)
        av, an = frames["voicing"][i], frames["noise"][i]
        if av > 0:
            voiced = np.fft.rfft(pulses[seg] * window, _FFT) * tilt * env * av
            spectrum += voiced + np.fft.rfft(white[seg] * window, _FFT) * env * tilt * av * speaker["breath"]
        if an > 0:
            if frames["aspiration"][i]:
                shape = env * 0.3
            else:
                band_lo, band_hi = frames["band"][i]
                shape = ((freqs >= band_lo) & (freqs <= band_hi)).astype(float) * 3.0
            spectrum += np.fft.rfft(white[seg] * window, _FFT) * shape * an
        frame = np.fft.irfft(spectrum, _FFT)[:len(window)]
        out[lo:lo + len(window)] += frame * window
    out = out[:n]
    return out / (np.abs(out).max() + 1e-12)


def _envelope(formants: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Cascade of second-order resonators, each with unit gain at 0 Hz: product of their magnitude responses."""
    env = np.ones_like(freqs)
    for f, b in zip(formants, _BANDWIDTHS):
        half = b / 2
        env *= (f * f + half * half) / np.sqrt(((freqs - f) ** 2 + half * half) * ((freqs + f) ** 2 + half * half))
    return env


def synthesize_set(words=WORDS, per_word: int = CLIPS_PER_WORD, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``per_word`` clips of each word, ``(N, 1, 16000)`` float32 and int64 labels, in a fixed order."""
    rng = np.random.default_rng(seed)
    x = np.stack([synthesize(w, rng) for w in words for _ in range(per_word)])[:, None, :]
    y = np.repeat(np.arange(len(words)), per_word).astype(np.int64)
    return x.astype(np.float32), y


@functools.lru_cache(maxsize=1)
def _default_set() -> tuple[np.ndarray, np.ndarray]:
    x, y = synthesize_set()
    x.flags.writeable = False  # shared by every load in this process
    return x, y


@DATASETS.register("keywords")
def load_keywords(data_dir: Path | None = None) -> Dataset:
    """The synthetic keywords (``data_dir`` unused: they are made, not read): 2,400 one-second clips."""
    x, y = _default_set()
    order = np.random.default_rng(SEED + 1).permutation(len(y))
    n_test = int(round(len(y) * TEST_FRACTION))
    test, rest = order[:n_test], order[n_test:]
    x_train, y_train, x_val, y_val = split_train_val(x[rest], y[rest])
    return Dataset("keywords", x_train, y_train, x_val, y_val, x[test], y[test], WORDS,
                   source=f"synthesized (dlforge.data.keywords, seed {SEED})",
                   details={"audio": audio_details(), "clips_per_word": CLIPS_PER_WORD})


__all__ = ["PEAK", "PHONES", "WORDS", "load_keywords", "synthesize", "synthesize_set"]
