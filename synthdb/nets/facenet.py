"""FaceNet (Inception-ResNet-v1) from the installed ``facenet-pytorch``, built empty for a weights file.

facenet-pytorch's own ``pretrained=`` downloads into the torch hub cache at construction time; synthdb never
lets it: the network is built with ``pretrained=None`` and the weights come from the file named by the model
card (``20180402-114759-vggface2.pt`` / ``20180408-102900-casia-webface.pt``, state dicts saved by
facenet-pytorch). Those files also hold the training classifier (``logits.*``, 8631 or 10575 classes), which
an embedder does not use: :data:`HEAD_PREFIXES` tells the loader to drop it.

Input: (N, 3, 160, 160) RGB from facenet-pytorch's MTCNN crop, standardised as its
``fixed_image_standardization``: ``(pixel - 127.5) / 128``. Output: unit-length 512-d embedding.
"""

from __future__ import annotations

from torch import nn

INPUT_SIZE = 160
HEAD_PREFIXES = ("logits.",)


def inception_resnet_v1() -> nn.Module:
    """A randomly initialised facenet-pytorch ``InceptionResnetV1`` that returns embeddings (no classifier).

    The import is here, not at the top: facenet-pytorch pulls in torchvision and its MTCNN, about two
    seconds that only callers who build this network should pay.
    """
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False)
