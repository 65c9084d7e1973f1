"""``ImportOptions``: what dlforge needs to know about a model of the user's own (stdlib only)."""

from __future__ import annotations

import os

from dlforge.card_validation import TASKS
from dlforge.errors import InputError
from dlforge.options import Options, dataclass, option
from dlforge.train.options import parse_normalize


@dataclass
class ImportOptions(Options):
    """Options of :func:`dlforge.checkpoint_from_module` and ``dlforge import``; recorded as the card's ``params``.

    Left empty, ``input_shape`` and ``labels`` come from ``data``: its image shape and class names.
    """

    input_shape: tuple = option((), "Shape of one input without the batch, e.g. 1,28,28 (default: the --data images').",
                                min=1)
    labels: tuple = option((), "Class names in output order, e.g. 0,1,2 (default: --data's classes).")
    num_classes: int | None = option(None, "Number of classes, named 0..N-1 (instead of --labels).", min=1)
    labels_file: str | None = option(None, "Class names in output order from a file: one per line, or an ImageNet "
                                           "synset.txt ('n01440764 tench, Tinca tinca'; a class folder may then be "
                                           "named by its WNID).")
    value_range: tuple = option((0.0, 1.0), "Range of the pixels the model takes, low,high.")
    data: str | None = option(None, "Dataset later stages verify, calibrate and attack on, and the test accuracy "
                                    "is measured on: digits, mnist, fashion-mnist, cifar10, a .npz file, an image "
                                    "folder, or an evaluation set of labelled photographs in the model's classes.")
    data_dir: str | os.PathLike | None = option(None, "Directory of a named dataset's files (MNIST, Fashion-MNIST "
                                                      "IDX files, CIFAR-10 python batches).")
    normalize: str = option("none", "Normalization the model expects, applied inside the checkpoint so it takes "
                            "pixels: none or MEAN/STD, e.g. 0.1307/0.3081 or per channel "
                            "0.49,0.48,0.45/0.25,0.24,0.26.",
                            nonempty=True)
    task: str = option("classification", "What the model outputs.", choices=TASKS)
    resize: int | None = option(None, "Photographs: resize the shorter side to this many pixels before the center crop "
                                      "to the input size (ImageNet: 256 for a 224 input); recorded on the card and "
                                      "applied by every stage that reads raw images.", min=1)
    crop: tuple = option((), "Photographs: center-crop to H,W (must be the input's size; default with --resize: "
                             "the input's size).", min=1)
    interpolation: str = option("bilinear", "Resampling filter for --resize.", choices=("bilinear", "bicubic",
                                                                                         "nearest"))
    channel_order: str = option("RGB", "Channel order the model takes.", choices=("RGB", "BGR"))
    name: str | None = option(None, "The model's name in the card (default: the file's, factory's or class's).")
    atol: float = option(1e-4, ".onnx files: largest logit difference allowed between the imported graph (with its "
                               "normalization in front) and the original fed normalized inputs.", min=0)
    weights: str | None = option(None, "Weights of a zoo or package.module:factory model: safetensors, or a PyTorch "
                                       "state dict (.pt/.pth/.th, read without unpickling code; nested state_dict, "
                                       "module. prefixes and old BatchNorm buffers are fixed up and recorded).")
    kwargs: dict = option({}, "Keyword arguments of the factory, as a JSON object.", flag="--kwargs", cli=False)

    def check(self) -> None:
        if self.input_shape and not all(type(d) is int for d in self.input_shape):
            raise InputError(f"--input-shape expects positive integers such as 1,28,28, got {self.input_shape!r}")
        if len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]:
            raise InputError(f"--value-range expects low,high with low < high, got {self.value_range!r}")
        if self.labels_file and (self.labels or self.num_classes is not None):
            raise InputError("give the classes once: --labels-file, or --labels / --num-classes")
        if self.labels and self.num_classes is not None and len(self.labels) != self.num_classes:
            raise InputError(f"--labels names {len(self.labels)} classes but --num-classes says {self.num_classes}; "
                             "give one of them")
        if not all(isinstance(label, str) and label for label in self.labels):
            raise InputError(f"--labels expects non-empty class names, got {list(self.labels)!r}")
        if len(set(self.labels)) != len(self.labels):
            raise InputError(f"--labels names a class twice: {', '.join(self.labels)}")
        if not isinstance(self.kwargs, dict):
            raise InputError(f"--kwargs expects a JSON object such as '{{\"width\": 32}}', got {self.kwargs!r}")
        if self.crop and (len(self.crop) != 2 or not all(type(d) is int for d in self.crop)):
            raise InputError(f"--crop expects H,W such as 224,224, got {self.crop!r}")
        if self.name is not None and not self.name.strip():
            raise InputError("--name must not be empty")
        parse_normalize(self.normalize)

    @property
    def preprocessing_asked(self) -> bool:
        """Whether any photograph preprocessing (resize, crop, interpolation, channel order) was asked for."""
        return not (self.resize is None and not self.crop and self.interpolation == "bilinear"
                    and self.channel_order == "RGB")

    def given_labels(self) -> tuple[str, ...]:
        """The classes the options name (--labels, --labels-file or --num-classes); empty when they name none."""
        if self.labels:
            return tuple(self.labels)
        if self.labels_file:
            from dlforge.data.labels import read_labels

            return read_labels(self.labels_file)
        return tuple(str(i) for i in range(self.num_classes or 0))

    def image_preprocessing(self, input_shape: tuple) -> dict:
        """The card's ``image_preprocessing`` (empty when no photograph preprocessing was asked for)."""
        if not self.preprocessing_asked:
            return {}
        from dlforge.data.evaluation import check_preprocess

        return check_preprocess({"resize": self.resize, "crop": list(self.crop) or None,
                                 "interpolation": self.interpolation, "channel_order": self.channel_order},
                                tuple(input_shape))
