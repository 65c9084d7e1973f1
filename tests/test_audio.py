"""Audio, the second modality: WAV reading and its refusals, the synthesized keywords, Speech Commands' layout, the
kws model's in-graph front end, and the audit's dB budgets, targeted and over-the-air probes on its engines."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from dlforge.data.wav import PEAK, db_from_eps, db_of, eps_from_db, read_wav, write_wav
from dlforge.errors import InputError
from tests.helpers import assert_refused, dlforge, dlforge_ok


def test_synthesized_keywords_are_reproducible_peak_normalized_and_distinct():
    from dlforge.data.keywords import WORDS, synthesize

    a = synthesize("yes", np.random.default_rng(3))
    b = synthesize("yes", np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16000,) and a.dtype == np.float32 and np.abs(a).max() == pytest.approx(PEAK)
    # the words differ in their sound, not only in their seed: mean spectra of two words are far apart
    from dlforge.adversarial.audio_report import spectrogram

    def mean_spectrum(word):
        rng = np.random.default_rng(0)
        return np.mean([spectrogram(synthesize(word, rng)).mean(1) for _ in range(8)], 0)

    assert np.abs(mean_spectrum("yes") - mean_spectrum("no")).mean() > 3.0  # dB
    assert len(set(WORDS)) == 10


def test_wav_round_trip_and_one_line_refusals(tmp_path):
    x = (np.sin(np.arange(8000) / 5.0) * 0.3).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, 16000)
    np.testing.assert_allclose(read_wav(tmp_path / "a.wav"), x, atol=1 / 32767)
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-1])  # a 16-bit file cut in the middle of its last sample
    with pytest.raises(InputError, match="truncated"):
        read_wav(tmp_path / "cut.wav")
    (tmp_path / "b.wav").write_bytes(b"not audio at all")
    with pytest.raises(InputError, match="not a PCM WAV"):
        read_wav(tmp_path / "b.wav")
    write_wav(tmp_path / "c.wav", x, 8000)
    with pytest.raises(InputError, match="sampled at 8000 Hz, the model's input at 16000 Hz"):
        read_wav(tmp_path / "c.wav")
    assert len(read_wav(tmp_path / "c.wav", resample=True)) == 2 * len(x)
    with wave.open(str(tmp_path / "d.wav"), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0" * 400)
    with pytest.raises(InputError, match="2 channels"):
        read_wav(tmp_path / "d.wav")


def _wav_tree(root, lengths, words=("yes", "no")):
    rng = np.random.default_rng(0)
    for word, n in zip(words, lengths):
        (root / word).mkdir(parents=True, exist_ok=True)
        for i, length in enumerate(n):
            write_wav(root / word / f"s{i}_nohash_0.wav", rng.normal(size=length) * 0.1)


def test_wav_folders_refuse_empty_classes_and_mixed_lengths(tmp_path):
    from dlforge.data import load_dataset

    _wav_tree(tmp_path / "ok", [[4000] * 6, [4000] * 6])
    data = load_dataset(str(tmp_path / "ok"))
    assert data.labels == ("no", "yes") and data.input_shape == (1, 4000)
    assert np.abs(data.x_train).max(axis=(1, 2)) == pytest.approx(PEAK)
    _wav_tree(tmp_path / "mixed", [[4000] * 6, [4000] * 5 + [3000]])
    with pytest.raises(InputError, match="mixed length"):
        load_dataset(str(tmp_path / "mixed"))
    _wav_tree(tmp_path / "empty", [[4000] * 6])
    (tmp_path / "empty" / "no").mkdir()
    with pytest.raises(InputError, match="no .wav files"):
        load_dataset(str(tmp_path / "empty"))


def _speech_commands(root):
    """A small tree in Speech Commands v0.02's layout: ten word folders, short clips among them, the split lists."""
    from dlforge.data.keywords import WORDS, synthesize

    rng = np.random.default_rng(1)
    val, test = [], []
    for word in WORDS:
        (root / word).mkdir(parents=True)
        for i in range(8):
            clip = synthesize(word, rng)[:12000 if i == 0 else 16000]  # one short clip, as the archive has
            name = f"{i:08x}_nohash_0.wav"
            write_wav(root / word / name, clip)
            (val if i == 6 else test if i == 7 else []).append(f"{word}/{name}")
    (root / "_background_noise_").mkdir()
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")


def test_speech_commands_reads_the_published_split_and_pads_short_clips(tmp_path):
    from dlforge.data import load_dataset

    _speech_commands(tmp_path / "sc")
    data = load_dataset("speech-commands", tmp_path / "sc")
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (60, 10, 10)
    assert data.input_shape == (1, 16000) and data.labels[:3] == ("yes", "no", "up")
    assert sorted(data.y_test) == list(range(10))
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="no Speech Commands"):
        load_dataset("speech-commands", tmp_path / "other")


def test_speech_commands_trains_exports_and_builds_from_the_cli(tmp_path):
    _speech_commands(tmp_path / "sc")
    dlforge_ok("train", "kws", "--data", "speech-commands", "--data-dir", tmp_path / "sc", "--epochs", "1",
               "-o", tmp_path / "ckpt")
    dlforge_ok("export", tmp_path / "ckpt", "-o", tmp_path / "onnx")
    dlforge_ok("build", tmp_path / "onnx", "--precision", "int8", "--calib-samples", "60", "-o", tmp_path / "int8")
    card = json.loads((tmp_path / "int8" / "card.json").read_text())
    assert card["evaluation"]["samples"] == 10 and card["model"]["audio"]["sample_rate"] == 16000


def test_log_mel_front_end_in_the_graph_matches_a_numpy_stft():
    import torch
    from dlforge_models.kws import LogMel, mel_filterbank

    x = np.random.default_rng(0).normal(size=(2, 1, 16000)).astype(np.float32) * 0.1
    with torch.no_grad():
        ours = LogMel()(torch.from_numpy(x)).numpy()[:, 0]
    n_fft, hop = 512, 256
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([x[:, 0, i * hop:i * hop + n_fft] for i in range(1 + (16000 - n_fft) // hop)], 1)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    expected = np.log(power @ mel_filterbank(40, n_fft, 16000) + 1e-6)
    np.testing.assert_allclose(ours, expected, atol=2e-3)


def test_db_budget_is_carlini_wagners_db_x():
    assert eps_from_db(-30) == pytest.approx(0.5 * 0.0316228, rel=1e-5)  # 10^(-30/20) of the 0.5 peak
    assert eps_from_db(-40) == pytest.approx(0.005, rel=1e-9)
    x = np.random.default_rng(0).uniform(-PEAK, PEAK, size=(3, 1, 100)).astype(np.float32)
    x[:, 0, 0] = PEAK
    delta = np.full_like(x, eps_from_db(-30))
    np.testing.assert_allclose(db_of(delta, x), -30, atol=1e-4)
    assert db_from_eps(eps_from_db(-37.5)) == pytest.approx(-37.5, abs=1e-9)  # the inverse, at the default peak


def test_audio_gallery_captions_give_the_budget_in_db_when_the_peak_is_known():
    from dlforge.adversarial.audio_report import gallery_html

    clip = (0.1 * np.sin(np.linspace(0, 2000, 16000))).astype(np.float32)[None]
    item = {"attack": "pgd", "eps": eps_from_db(-30), "clean_prediction": "go", "adversarial_prediction": "stop",
            "clean": clip.tolist(), "adversarial": (clip + 0.01).tolist()}
    assert 'alt="pgd -30 dB_x (eps 0.0158): heard go -&gt; stop"' in gallery_html([item], 16000, peak=PEAK)
    assert 'alt="pgd eps 0.0158114: heard go' in gallery_html([item], 16000)  # no peak known: the raw eps


@pytest.fixture(scope="module")
def kws_engines(tmp_path_factory):
    """kws trained 6 epochs on the synthesized keywords, exported, built fp32 and INT8 (about a minute)."""
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training

    root = tmp_path_factory.mktemp("kws")
    ckpt = checkpoint_from_training("kws", root / "checkpoint", data="keywords", epochs=6, progress=False)
    onnx = onnx_from_checkpoint(ckpt.path, root / "onnx")
    return {"checkpoint": ckpt, "fp32": engine_from_onnx(onnx.path, root / "fp32"),
            "int8": engine_from_onnx(onnx.path, root / "int8", precision="int8")}


def test_kws_int8_engine_keeps_its_front_end_fp32_and_stays_accurate(kws_engines):
    ckpt, int8 = kws_engines["checkpoint"], kws_engines["int8"]
    assert ckpt.card.model.audio == {"sample_rate": 16000, "peak": PEAK}
    assert ckpt.card.model.value_range == (-1.0, 1.0)
    import re

    import onnx

    card = json.loads((int8.path / "card.json").read_text())
    kept = json.loads(re.search(r'"kept_fp32": (\[[^\]]*\])', json.dumps(card)).group(1))
    assert "node_matmul" in kept and any(k.startswith("node_Conv") for k in kept)  # the DFT conv and the mel matmul
    graph = onnx.load(str(int8.path / "model.onnx")).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert sum(n.input[0] in dequantized for n in convs) >= 5  # the DS-CNN's convolutions run in INT8
    assert not any(n.input[0] in dequantized for n in convs if n.name in kept)
    assert card["evaluation"]["parent_accuracy"] >= 0.8 and card["evaluation"]["accuracy_drop"] <= 2.0, card["evaluation"]


def test_targeted_pgd_through_the_int8_engines_own_graph_and_the_genetic_search(kws_engines, tmp_path):
    fp32, int8 = kws_engines["fp32"].path, kws_engines["int8"].path
    dlforge_ok("audit", fp32, int8, "--attacks", "pgd,targeted:target=go:points=20:steps=50:queries=300",
               "--eps-db", "-30", "--samples", "40", "-o", tmp_path / "audit")
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert report["audio"]["sample_rate"] == 16000
    assert {r["db"] for r in report["rows"] if r["eps"] > 0} == {-30.0}
    rows = report["probes"]["targeted"]["rows"]
    by = {(r["route"], r["target"], r["attack"]): r for r in rows}
    own = by[("white-box (engine)", "int8", "pgd")]
    assert own["success"] >= 0.8 and own["goal"] == "go" and own["points"] == 20
    assert ("query", "int8", "genetic") in by and ("transfer", "int8", "pgd") in by
    html = (tmp_path / "audit" / "report.html").read_text()
    assert html.count("data:audio/wav;base64,") >= 4  # the gallery's clips, to listen to


def test_models_and_data_of_the_other_modality_are_refused(tmp_path):
    assert_refused(dlforge("train", "kws", "-o", tmp_path / "a"), "kws is an audio model and digits holds image",
                   nothing_under=tmp_path)
    assert_refused(dlforge("train", "lenet", "--data", "keywords", "-o", tmp_path / "b"),
                   "lenet is an image model and keywords holds audio", nothing_under=tmp_path)


def test_audio_refusals(kws_engines, digits_engines):
    int8 = kws_engines["int8"].path
    assert_refused(dlforge("audit", int8, "--attacks", "square"), "works on image inputs")
    assert_refused(dlforge("audit", int8, "--detectors", "feature-squeezing"), "none is built for audio")
    assert_refused(dlforge("audit", digits_engines["fp32"].path, "--eps-db", "-30"), "--eps-db is for audio models")
    assert_refused(dlforge("audit", digits_engines["fp32"].path, "--attacks", "over-the-air"), "works on audio inputs")


def test_over_the_air_eot_survives_the_chain_at_least_as_well_as_plain_pgd(kws_engines):
    from dlforge.adversarial.audit import run_audit

    report = run_audit([kws_engines["int8"].path], attacks=("over-the-air:db=-40:points=30:steps=10:eot_samples=4:draws=4",),
                       samples=40, progress=False)
    rows = {(r["route"], r["attack"]): r for r in report.probes["over-the-air"]["rows"]}
    for route in ("white-box", "white-box (engine)"):
        plain, eot = rows[(route, "pgd")], rows[(route, "eot-pgd")]
        assert eot["adversarial"] > 0.3 and eot["fooled_after_chain"] > 0, eot  # there was something to survive
        assert eot["fooled_after_chain"] >= plain["fooled_after_chain"] - 0.02, (plain, eot)
        assert plain["db"] == -40 and plain["clean_under_chain"] > 0.3  # the chain does not destroy the words


def test_speech_commands_download_checks_the_sha256_and_unpacks_only_the_words_and_lists(tmp_path):
    import tarfile

    from dlforge.data.speech_commands import download_speech_commands, unpack
    from dlforge.errors import DownloadFailed

    _speech_commands(tmp_path / "src")
    (tmp_path / "src" / "_background_noise_" / "noise.wav").write_bytes(b"x")
    (tmp_path / "src" / "bed").mkdir()
    write_wav(tmp_path / "src" / "bed" / "a_nohash_0.wav", np.zeros(100))
    archive = tmp_path / "sc.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname=".")
    with pytest.raises(DownloadFailed, match="SHA-256"):
        download_speech_commands(tmp_path / "out", url=archive.as_uri())
    assert list((tmp_path / "out").iterdir()) == []  # the unchecked archive is gone, nothing unpacked
    written = unpack(archive, tmp_path / "ok")
    assert len(written) == 82 and not (tmp_path / "ok" / "bed").exists()
    assert not (tmp_path / "ok" / "_background_noise_").exists()


def test_a_wav_folder_at_another_rate_is_refused_or_resampled_and_every_stage_reads_it_alike(tmp_path):
    from dlforge.data.keywords import synthesize
    from dlforge.data.wav import resample_to

    rng = np.random.default_rng(2)
    for word in ("yes", "no"):
        (tmp_path / "clips" / word).mkdir(parents=True)
        for i in range(12):
            write_wav(tmp_path / "clips" / word / f"{i}.wav", resample_to(synthesize(word, rng), 16000, 8000), 8000)
    result = dlforge("train", "kws", "--data", tmp_path / "clips", "--epochs", "1", "-o", tmp_path / "refused")
    assert_refused(result, "sampled at 8000 Hz", nothing_under=tmp_path / "refused")
    assert_refused(dlforge("train", "lenet", "--resample", "-o", tmp_path / "x"), "--resample applies to audio")
    rate = dlforge("train", "kws", "--data", "keywords", "--set", "sample_rate=8000", "-o", tmp_path / "rate")
    assert_refused(rate, "keywords is sampled at 16000 Hz", nothing_under=tmp_path / "rate")  # the front end matches
    dlforge_ok("train", "kws", "--data", tmp_path / "clips", "--resample", "--epochs", "1", "-o", tmp_path / "ckpt")
    card = json.loads((tmp_path / "ckpt" / "card.json").read_text())
    assert card["params"]["resample"] is True and card["model"]["inputs"][0]["shape"] == ["batch", 1, 16000]
    dlforge_ok("export", tmp_path / "ckpt", "-o", tmp_path / "onnx")  # verified on the same resampled clips
    dlforge_ok("build", tmp_path / "onnx", "--calib-samples", "16", "-o", tmp_path / "fp32")
