"""Google's Speech Commands v0.02 (Warden 2018, https://arxiv.org/abs/1804.03209), its ten command words.

The archive ``speech_commands_v0.02.tar.gz`` unpacks to one folder per word of one-second (or shorter)
16 kHz 16-bit WAV clips, ``_background_noise_/``, and the published split: ``validation_list.txt`` and
``testing_list.txt`` name the clips (``word/speaker_nohash_n.wav``) of the validation and test sets, every
other clip is training (the lists split by speaker, so no speaker is in two sets). dlforge reads the ten
keywords of the standard task (:data:`WORDS`; the "unknown" and "silence" classes are not built) and pads
shorter clips with zeros to one second, as the dataset's own input pipeline does; clips are
peak-normalized as every audio dataset (:mod:`dlforge.data.wav`).

``dlforge download speech-commands`` fetches the archive (2.3 GB) and checks its SHA-256 before unpacking.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from dlforge.data.dataset import DATASETS, Dataset
from dlforge.data.keywords import WORDS
from dlforge.data.wav import SAMPLE_RATE, audio_details, fit_length, peak_normalize, read_wav
from dlforge.data.download import checked_download
from dlforge.errors import InputError

URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
ARCHIVE_SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
SPLIT_FILES = {"val": "validation_list.txt", "test": "testing_list.txt"}
CLIP = SAMPLE_RATE  # one second


def find_folder(data_dir: Path) -> Path:
    """The folder holding the word folders and the split lists: ``data_dir`` or its one sub-folder."""
    for folder in (data_dir, *sorted(p for p in data_dir.iterdir() if p.is_dir())) if data_dir.is_dir() else ():
        if (folder / SPLIT_FILES["test"]).is_file():
            return folder
    raise InputError(f"{data_dir} has no Speech Commands ({SPLIT_FILES['test']} and one folder per word); run "
                     f"`dlforge download speech-commands --data-dir {data_dir}`, or unpack speech_commands_v0.02.tar.gz "
                     "there and pass --data-dir")


@DATASETS.register("speech-commands")
def load_speech_commands(data_dir: Path, *, resample: bool = False) -> Dataset:
    """The ten keywords of Speech Commands under ``data_dir``, split by its validation and testing lists."""
    folder = find_folder(data_dir)
    missing = [w for w in WORDS if not (folder / w).is_dir()]
    if missing:
        raise InputError(f"{folder} lacks the word folder(s) {', '.join(missing)}; unpack the whole archive there")
    listed = {}
    for split, name in SPLIT_FILES.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{folder} lacks {name}; unpack the whole archive there")
        for line in path.read_text(encoding="utf-8").split():
            listed[line.strip()] = split
    parts = {s: ([], []) for s in ("train", "val", "test")}
    for label, word in enumerate(WORDS):
        clips = sorted((folder / word).glob("*.wav"))
        if not clips:
            raise InputError(f"{folder / word} holds no .wav clips; unpack the whole archive there")
        for clip in clips:
            x = read_wav(clip, resample=resample)
            if len(x) > CLIP:
                raise InputError(f"{clip} is {len(x) / SAMPLE_RATE:.2f} s long; Speech Commands clips are at most one "
                                 "second: replace it with the archive's file")
            xs, ys = parts[listed.get(f"{word}/{clip.name}", "train")]
            xs.append(fit_length(x, CLIP))
            ys.append(label)
    arrays = {}
    for split, (xs, ys) in parts.items():
        if not xs:
            raise InputError(f"{folder}: no clip of the ten keywords is in the {split} split; check "
                             f"{SPLIT_FILES.get(split, 'the split lists')}")
        arrays[split] = (peak_normalize(np.stack(xs)[:, None, :]), np.asarray(ys, dtype=np.int64))
    return Dataset("speech-commands", *arrays["train"], *arrays["val"], *arrays["test"], WORDS, source=str(folder),
                   details={"audio": audio_details(), "words": list(WORDS), "resampled": bool(resample)})


def download_speech_commands(data_dir: Path, url: str = URL) -> list[Path]:
    """Download the archive into ``data_dir``, check its SHA-256, unpack the ten word folders and the split lists.

    The archive is unpacked only after its checksum matches."""
    with checked_download(url, data_dir, algorithm="sha256", expected=ARCHIVE_SHA256,
                          by_hand=f"unpack speech_commands_v0.02.tar.gz into {data_dir} by hand") as archive:
        return unpack(archive, data_dir)


def unpack(archive: Path, data_dir: Path) -> list[Path]:
    """The ten word folders' WAV files and the split lists of a checked archive (regular files only)."""
    written = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name.lstrip("./")).parts
            keep = (len(parts) == 1 and parts[0] in SPLIT_FILES.values()) or (
                len(parts) == 2 and parts[0] in WORDS and parts[1].endswith(".wav"))
            if keep and member.isfile():
                path = data_dir.joinpath(*parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tar.extractfile(member).read())
                written.append(path)
    return written
