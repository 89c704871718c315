"""Face detection, landmarks and alignment crops.

``landmarks`` holds the one five-point convention and the per-image result types, ``detect`` the MTCNN and
dlib detectors plus the image loader, ``align`` the crop presets and the batched, differentiable warps,
``crop`` the file-level API behind ``synthdb crop``.
"""
