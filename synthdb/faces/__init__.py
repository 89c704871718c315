"""Face detection, landmarks and alignment crops.

``landmarks`` holds the one five-point convention and the per-image result types, ``geometry`` dlib's mean
face and the similarity fit, ``detect`` the MTCNN and dlib detectors plus the image loader, ``align`` the crop
presets and the batched, differentiable warps, ``embed`` the embedder interface. Nothing here touches a
workspace: networks are given their weights (:mod:`synthdb.zoo` finds them), and the jobs over files and
datasets (:mod:`synthdb.crop_files`, :mod:`synthdb.embed_dataset`) live above.
"""
