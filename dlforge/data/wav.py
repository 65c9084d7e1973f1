"""Audio as dlforge reads it: WAV files, and folders of them with one sub-folder per word.

An audio dataset holds waveforms as float32 ``(N, 1, samples)`` (one channel), in the value range
[-1, 1], every clip **peak-normalized** to :data:`PEAK` (-6 dBFS). The normalization makes the attack
budgets of Carlini & Wagner ("Audio Adversarial Examples", 2018) one number per dataset: their
dB_x(delta) = 20 log10 max|delta| - 20 log10 max|x|, so a budget of -30 dB is an L-inf eps of
PEAK * 10^(-30/20) for every clip (:func:`eps_from_db`). The model's card records the sample rate and
the peak (``model.audio``), so every later stage knows its input is sound.

WAV files are read with the standard library (PCM 8, 16, 24, 32-bit; mono, or the first channel is
refused: a user mixes stereo down knowingly). A folder's clips must share the model's sample rate
(:data:`SAMPLE_RATE`) unless ``resample`` (``dlforge train --resample``: polyphase, by the exact ratio; the
card records it, so every later stage reads the clips the same way) and one length (Speech Commands pads
its short clips instead, as Google's input pipeline does: :mod:`dlforge.data.speech_commands`).
"""

from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import numpy as np

from dlforge.data.dataset import DATA_FORMATS, DataFormat, Dataset, holdout_test, split_train_val
from dlforge.errors import InputError

SAMPLE_RATE = 16_000
PEAK = 0.5  # every clip's max |x|: -6 dBFS, headroom for an attack or a room to add to it
VALUE_RANGE = (-1.0, 1.0)
MAX_FILES = 200_000


def audio_details(sample_rate: int = SAMPLE_RATE) -> dict:
    """What a dataset's card and a model's card record of its sound: rate, peak, value range."""
    return {"sample_rate": sample_rate, "peak": PEAK, "value_range": list(VALUE_RANGE)}


def peak_normalize(x: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Each clip of ``x`` (N, ..., samples) scaled so its max |x| is ``peak`` (a silent clip stays silent)."""
    flat = np.abs(x.reshape(len(x), -1)).max(1)
    scale = np.where(flat > 0, peak / np.maximum(flat, 1e-12), 1.0)
    return (x * scale.reshape(-1, *([1] * (x.ndim - 1)))).astype(np.float32)


def eps_from_db(db: float, peak: float = PEAK) -> float:
    """The L-inf eps of a budget of ``db`` dB relative to peak-normalized clips (Carlini & Wagner's dB_x)."""
    return float(peak * 10.0 ** (db / 20.0))


def db_from_eps(eps: float, peak: float = PEAK) -> float:
    """The dB_x of an L-inf eps against clips peak-normalized to ``peak``: the inverse of :func:`eps_from_db`."""
    return float(20.0 * np.log10(eps / peak))


def db_of(delta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Carlini & Wagner's dB_x(delta) per clip: 20 log10 max|delta| - 20 log10 max|x| (-inf for no change)."""
    d = np.abs(delta.reshape(len(delta), -1)).max(1)
    p = np.abs(x.reshape(len(x), -1)).max(1)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(d) - 20 * np.log10(np.maximum(p, 1e-12))


def read_wav(path: Path, *, sample_rate: int | None = SAMPLE_RATE, resample: bool = False) -> np.ndarray:
    """A WAV file's samples as float32 in [-1, 1]; at ``sample_rate`` (resampled only if ``resample``)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise InputError(f"{path} is not a PCM WAV file ({exc}); convert it, e.g. `sox {path.name} -b 16 out.wav`") \
            from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if channels != 1:
        raise InputError(f"{path} has {channels} channels; dlforge reads mono clips: mix it down "
                         f"(`sox {path.name} -c 1 out.wav`)")
    x = _pcm(raw, width, path)
    if sample_rate is not None and rate != sample_rate:
        if not resample:
            raise InputError(f"{path} is sampled at {rate} Hz, the model's input at {sample_rate} Hz; pass --resample "
                             f"(dlforge train) to convert it, or resample the files (`sox {path.name} -r {sample_rate} "
                             "out.wav`)")
        x = resample_to(x, rate, sample_rate)
    return x


def _pcm(raw: bytes, width: int, path: Path) -> np.ndarray:
    if len(raw) % width:
        raise InputError(f"{path} is truncated (its last sample is cut off); re-export or replace the file")
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    if width == 4:
        return (np.frombuffer(raw, "<i4").astype(np.float64) / 2.0 ** 31).astype(np.float32)
    raise InputError(f"{path} has {8 * width}-bit samples; dlforge reads 8, 16, 24 and 32-bit PCM")


def write_wav(path_or_file, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float samples in [-1, 1] as 16-bit PCM mono (a path or a binary file object)."""
    pcm = (np.clip(np.asarray(x, dtype=np.float64).reshape(-1), -1, 1) * 32767).round().astype("<i2")
    with wave.open(path_or_file if not isinstance(path_or_file, Path) else str(path_or_file), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def wav_bytes(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """``x`` as the bytes of a WAV file (for the report's embedded players)."""
    buf = io.BytesIO()
    write_wav(buf, x, sample_rate)
    return buf.getvalue()


def resample_to(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling by the exact ratio ``target / rate`` (scipy's anti-aliased resample_poly)."""
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad a shorter clip at the end to ``length`` samples (longer clips are the caller's error)."""
    return x if len(x) >= length else np.pad(x, (0, length - len(x)))


def is_wav_folder(path: Path) -> bool:
    """A folder whose sub-folders hold ``.wav`` files (one sub-folder per word)."""
    if not path.is_dir():
        return False
    return any(p.is_dir() and next(p.glob("*.wav"), None) is not None for p in path.iterdir()
               if not p.name.startswith((".", "_")))


def load_wav_folder(folder: Path, *, resample: bool = False) -> Dataset:
    """One sub-folder of WAV clips per word: clips of one length at 16 kHz, peak-normalized; a seeded 20% test
    and 10% validation split (as image folders)."""
    folder = folder.resolve()
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    files = {c: sorted((folder / c).glob("*.wav")) for c in classes}
    empty = [c for c in classes if not files[c]]
    if empty:
        raise InputError(f"{folder}: class folder(s) {', '.join(empty)} hold no .wav files; add clips or remove "
                         "the folder")
    if sum(len(f) for f in files.values()) > MAX_FILES:
        raise InputError(f"{folder} holds more than {MAX_FILES} clips; use a smaller subset")
    clips, labels, paths = [], [], []
    for i, c in enumerate(classes):
        for p in files[c]:
            clips.append(read_wav(p, resample=resample))
            labels.append(i)
            paths.append(p)
    lengths = {len(c) for c in clips}
    if len(lengths) > 1:
        short = min(range(len(clips)), key=lambda k: len(clips[k]))
        long = max(range(len(clips)), key=lambda k: len(clips[k]))
        raise InputError(f"{folder}: clips of mixed length ({len(clips[short])} samples in "
                         f"{paths[short].relative_to(folder)}, {len(clips[long])} in {paths[long].relative_to(folder)});"
                         " cut or pad them to one length")
    x = peak_normalize(np.stack(clips)[:, None, :])
    y = np.asarray(labels, dtype=np.int64)
    x_rest, y_rest, x_test, y_test = holdout_test(x, y)
    x_train, y_train, x_val, y_val = split_train_val(x_rest, y_rest)
    return Dataset(str(folder), x_train, y_train, x_val, y_val, x_test, y_test, tuple(classes), source=str(folder),
                   details={"audio": audio_details(), "resampled": bool(resample)})


DATA_FORMATS.register("wav-folder")(DataFormat(is_wav_folder, load_wav_folder,
                                               "a folder of WAV clips, one sub-folder per word"))
