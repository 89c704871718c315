"""CMU Multi-PIE: session, subject, recording, camera, flash and expression from the multiview paths.

Layout (under the root that holds ``session01/`` ... ``session04/``)::

    session{SS}/multiview/{subject}/{recording}/{camera XX_Y}/{subject}_{SS}_{recording}_{XXY}_{shot}.png

with a 3-digit subject and 2-digit session, recording and shot, for example
``session03/multiview/241/01/05_0/241_03_01_050_07.png``. The shot is the flash
(illumination) index, 00 (no flash) to 19. The expression follows from (session, recording):
neutral = 01/01, 02/01, 03/01, 04/01, 04/02; smile = 01/02, 03/02; surprise = 02/02; squint = 02/03;
disgust = 03/03; scream = 04/03. Files whose name disagrees with their folders, or that are not
images, are not Multi-PIE samples and are skipped. Sessions that are absent are simply not imported.
Folder symlinks are named and never entered.

Keys are the reference index's (the relative path without extension, ``/`` -> ``_``), so key lists
written by the reference package still match. The identity is the 3-digit subject id.

Protocols, all with the same subject partition (``SUBJECT_GROUPS``: 208 train, 64 dev, 65 eval
subjects, from the reference package's file lists). Train subjects put every selected image in
group ``train`` (purpose train); a dev/eval subject enrols with its session-01 recording-01 image(s)
(purpose enroll) and is probed with its selected images of sessions 02-04 (purpose probe); its other
session-01 images belong to no group.

* ``U`` (illumination): camera 05_1, shots 00-18, recordings 01/01, 02/01, 03/01, 04/01, 04/02;
  enrolment is shot 00 of 01/01.
* ``E_lit`` (expression): camera 05_1, shot 07 (frontal flash), every recording of every session.
* ``P_center_lit`` (pose): shot 07, the neutral recordings, the 7 central cameras 05_1, 08_0, 13_0,
  14_0, 05_0, 19_0, 04_1; enrolment is camera 05_1 only.

On the full database these rules give the reference lists' counts: E_lit train 1095 images, dev
64 enrol / 576 probe, eval 65 / 585; P_center_lit train 3605, dev 64 / 1792, eval 65 / 1820.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from synthdb.errors import SynthdbError
from synthdb.sources.entries import DirectorySource, Entry, LinkedFolder
from synthdb.sources.listing import folders, is_image_name, sorted_listing, subfolders

_TRAIN = (
    "1 7 12 13 16 21 24 25 26 30 31 32 37 39 45 51 58 59 60 61 63 65 66 72 73 75 77 81 82 84 86 87 88 89 90 "
    "91 92 93 94 95 96 98 99 101 109 113 114 119 120 121 130 134 135 136 140 141 142 144 146 147 148 151 152 "
    "153 154 155 158 159 160 162 163 164 165 166 171 172 173 174 176 179 180 182 183 187 189 195 197 200 201 "
    "204 206 207 210 211 212 214 215 216 217 218 219 221 222 224 226 228 229 231 232 233 234 237 238 239 242 "
    "243 244 245 247 249 251 252 253 254 255 256 257 258 259 260 261 262 263 264 265 266 267 268 269 271 272 "
    "273 274 276 277 278 279 280 284 285 286 287 288 289 290 291 292 293 294 295 296 297 298 299 300 301 302 "
    "303 304 305 306 308 309 310 311 312 313 314 315 316 317 318 319 320 321 322 323 324 325 326 327 328 329 "
    "330 332 333 334 335 336 337 338 339 341 342 343 344 345 346"
)
_DEV = (
    "2 4 6 8 10 15 18 20 22 27 33 35 38 40 42 46 48 50 52 54 57 64 68 69 71 78 80 85 97 102 105 107 110 111 "
    "115 118 123 125 126 128 132 137 139 143 149 157 167 169 170 177 184 186 190 191 193 198 202 205 208 220 "
    "227 235 241 248"
)
_EVAL = (
    "3 5 9 11 14 17 19 23 28 29 34 36 41 43 44 47 49 53 55 56 62 67 70 74 76 79 83 100 103 104 106 108 112 "
    "116 117 122 124 127 129 131 133 138 145 150 156 161 168 175 178 181 185 188 192 194 196 199 203 209 223 "
    "225 230 236 240 246 250"
)
SUBJECT_GROUPS: dict[int, str] = {
    int(subject): group
    for group, ids in (("train", _TRAIN), ("dev", _DEV), ("eval", _EVAL))
    for subject in ids.split()
}
"""The subject partition of the reference protocols (the same for U, E_lit and P_center_lit)."""

EXPRESSIONS: dict[tuple[int, int], str] = {
    (1, 1): "neutral", (2, 1): "neutral", (3, 1): "neutral", (4, 1): "neutral", (4, 2): "neutral",
    (1, 2): "smile", (3, 2): "smile", (2, 2): "surprise", (2, 3): "squint", (3, 3): "disgust",
    (4, 3): "scream",
}  # fmt: skip
"""Expression of each (session, recording)."""

NEUTRAL = frozenset(k for k, v in EXPRESSIONS.items() if v == "neutral")
CENTER_CAMERAS = frozenset({"05_1", "08_0", "13_0", "14_0", "05_0", "19_0", "04_1"})
FRONTAL = "05_1"
LIT_SHOT = 7
ENROLL_RECORDING = (1, 1)

_SESSION = re.compile(r"session(\d{2})")
_PATH = re.compile(
    r"session(\d{2})/multiview/(\d{3})/(\d{2})/(\d{2})_(\d)/(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.[^./]+"
)


def _role(group: str, session: int, recording: int, enrolls: bool) -> tuple[str, str] | None:
    """(group, purpose) of a selected image: train subjects train; others enrol or probe."""
    if group == "train":
        return "train", "train"
    if (session, recording) == ENROLL_RECORDING:
        return (group, "enroll") if enrolls else None
    return (group, "probe") if session >= 2 else None


def memberships(
    subject: int, session: int, recording: int, camera: str, shot: int
) -> tuple[tuple[str, str, str], ...]:
    """The (protocol, group, purpose) memberships of one image under the U, E_lit and P_center_lit rules."""
    group = SUBJECT_GROUPS.get(subject)
    if group is None:
        return ()
    found: list[tuple[str, str, str]] = []
    if camera == FRONTAL and shot <= 18 and (session, recording) in NEUTRAL:
        role = _role(group, session, recording, enrolls=shot == 0)
        if role:
            found.append(("U", *role))
    if camera == FRONTAL and shot == LIT_SHOT:
        role = _role(group, session, recording, enrolls=True)
        if role:
            found.append(("E_lit", *role))
    if shot == LIT_SHOT and camera in CENTER_CAMERAS and (session, recording) in NEUTRAL:
        role = _role(group, session, recording, enrolls=camera == FRONTAL)
        if role:
            found.append(("P_center_lit", *role))
    return tuple(found)


def parse_path(rel: str) -> Entry | None:
    """The sample a relative path is, or None when it is not a Multi-PIE multiview image path."""
    match = _PATH.fullmatch(rel)
    if match is None or not is_image_name(rel):
        return None
    session, subject, recording, cam_major, cam_minor, *named, shot = match.groups()
    if named != [subject, session, recording, cam_major + cam_minor]:
        return None
    subject_id, session_no, recording_no, shot_no = int(subject), int(session), int(recording), int(shot)
    camera = f"{cam_major}_{cam_minor}"
    attributes = {
        "subject": subject_id,
        "session": session_no,
        "recording": recording_no,
        "camera": camera,
        "shot": shot_no,
        "expression": EXPRESSIONS.get((session_no, recording_no)),
    }
    return Entry(
        key=rel.rsplit(".", 1)[0].replace("/", "_"),
        path=rel,
        identity=subject,
        attributes=attributes,
        groups=memberships(subject_id, session_no, recording_no, camera, shot_no),
    )


class MultiPIE(DirectorySource):
    name = "multipie"

    def check(self, root: Path) -> None:
        if not any(
            _SESSION.fullmatch(d.name) and (Path(d.path) / "multiview").is_dir() for d in subfolders(root)
        ):
            raise SynthdbError(
                f"{root}: no session01..04/multiview folders; pass the Multi-PIE data folder that holds them"
            )

    def scan(self, root: Path) -> Iterator[Entry | LinkedFolder]:
        for session in folders(root, ""):
            if isinstance(session, LinkedFolder):
                yield session
            elif _SESSION.fullmatch(session.name):
                multiview = f"{session.name}/multiview"
                if (root / multiview).is_symlink():
                    yield LinkedFolder(multiview)
                elif (root / multiview).is_dir():
                    yield from _walk(root, multiview, 3)


def _walk(root: Path, rel: str, levels: int) -> Iterator[Entry | LinkedFolder]:
    """The samples under ``root/rel``, ``levels`` folders further down (subject, recording, camera)."""
    if levels == 0:
        for item in sorted_listing(root / rel):
            entry = parse_path(f"{rel}/{item.name}")
            if entry is not None and item.is_file():
                yield entry
        return
    for sub in folders(root / rel, rel + "/"):
        if isinstance(sub, LinkedFolder):
            yield sub
        else:
            yield from _walk(root, f"{rel}/{sub.name}", levels - 1)
