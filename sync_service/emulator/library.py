"""A small library of media whose content the emulator knows, for the demo and search tests.

Mixpeek describes and transcribes what a video shows and says. The emulator cannot watch a video,
so for any URL it makes plausible texts up from the URL's hash; for the URLs below it "sees"
the scripted segments instead: eight videos on distinct subjects and three images. A search over
what the service synced can then be checked for finding the right segment.
"""

from __future__ import annotations

from typing import NamedTuple

BASE = "https://media.example.com"


class Scene(NamedTuple):
    description: str
    transcription: str
    on_screen: str


_VIDEOS: dict[str, list[Scene]] = {
    "sourdough-bread.mp4": [
        Scene(
            "A baker feeds a bubbly sourdough starter with flour and water in a glass jar.",
            "Feed your starter the night before, it should double by morning.",
            "STARTER",
        ),
        Scene(
            "Hands knead and stretch the sourdough dough on a floured wooden counter.",
            "Knead the dough until it passes the windowpane test.",
            "KNEADING",
        ),
        Scene(
            "A golden crusty loaf comes out of a cast iron dutch oven.",
            "Bake covered for twenty minutes, then uncovered until the crust is deep brown.",
            "BAKING",
        ),
    ],
    "football-final.mp4": [
        Scene(
            "Two football teams walk onto a floodlit stadium pitch before the final.",
            "A packed stadium tonight for the cup final.",
            "KICK OFF",
        ),
        Scene(
            "The goalkeeper dives to the left and saves the penalty kick.",
            "What a save, the keeper guessed right on the penalty!",
            "PENALTY",
        ),
        Scene(
            "The striker heads the ball into the net from a corner and celebrates.",
            "Goal! A towering header settles the match.",
            "GOAL",
        ),
    ],
    "volcano-eruption.mp4": [
        Scene(
            "Ash clouds rise above a volcano crater under a grey sky.",
            "Scientists measure sulfur gas before the eruption.",
            "MONITORING",
        ),
        Scene(
            "Glowing orange lava flows down the volcano slope at night.",
            "The lava flow moves slowly, burning everything in its path.",
            "LAVA",
        ),
    ],
    "guitar-lesson.mp4": [
        Scene(
            "A teacher tunes an acoustic guitar string by string.",
            "Tune the low E string first, then match the others to it.",
            "TUNING",
        ),
        Scene(
            "Close-up of fingers forming a G major chord on the fretboard.",
            "Press the strings just behind the frets for a clean chord.",
            "CHORDS",
        ),
    ],
    "morning-yoga.mp4": [
        Scene(
            "A woman on a mat moves through a sun salutation at sunrise.",
            "Inhale as you raise your arms, exhale as you fold forward.",
            "BREATHE",
        ),
        Scene(
            "She holds downward dog, stretching hamstrings and shoulders.",
            "Press your heels toward the floor and lengthen your spine.",
            "DOWNWARD DOG",
        ),
    ],
    "flat-tire.mp4": [
        Scene(
            "A driver loosens the lug nuts of a flat tire with a wrench.",
            "Loosen the lug nuts before you jack up the car.",
            "STEP 1",
        ),
        Scene(
            "The car is raised with a jack and the spare wheel is mounted.",
            "Tighten the nuts in a star pattern so the wheel sits evenly.",
            "SPARE WHEEL",
        ),
    ],
    "hummingbirds.mp4": [
        Scene(
            "A hummingbird hovers and drinks nectar from a red flower.",
            "Its wings beat more than fifty times every second.",
            "NECTAR",
        ),
        Scene(
            "Two hummingbirds chase each other around a garden feeder.",
            "Males defend their feeder fiercely against rivals.",
            "TERRITORY",
        ),
    ],
    "chess-opening.mp4": [
        Scene(
            "A chess board with white opening with the queen's gambit.",
            "The queen's gambit offers a pawn to control the centre.",
            "OPENING",
        ),
        Scene(
            "Black castles kingside while white develops the bishop and knight.",
            "Castle early to keep your king safe.",
            "CASTLING",
        ),
    ],
}

_IMAGES: dict[str, tuple[str, str]] = {
    "lighthouse.jpg": ("A red and white lighthouse on rocky cliffs above stormy sea.", "COAST"),
    "red-panda.jpg": ("A red panda sleeping on a mossy tree branch in a bamboo forest.", "ZOO"),
    "espresso.jpg": ("A barista pours latte art into an espresso cup on a cafe counter.", "CAFE"),
}

#: Texts to index beside the media: each one about its own subject.
TEXTS = [
    "Honeybees turn flower nectar into honey and store it in wax combs inside the hive.",
    "In ice hockey a player is offside when entering the attacking zone before the puck.",
    "A lemon tart needs a crisp shortcrust pastry and a smooth, tangy lemon curd filling.",
]

#: The demo's queries, each with the one segment it must find first (video, segment index).
QUERIES: list[tuple[str, str, int]] = [
    ("kneading sourdough dough", "sourdough-bread.mp4", 1),
    ("goalkeeper saves a penalty", "football-final.mp4", 1),
    ("lava flowing down a volcano at night", "volcano-eruption.mp4", 1),
]

INTERVAL = 10  # seconds per scripted segment


def video_url(name: str) -> str:
    return f"{BASE}/videos/{name}"


def image_url(name: str) -> str:
    return f"{BASE}/images/{name}"


VIDEO_URLS = [video_url(name) for name in _VIDEOS]
IMAGE_URLS = [image_url(name) for name in _IMAGES]


def _name(url: str, kind: str) -> str | None:
    prefix = f"{BASE}/{kind}/"
    return url[len(prefix) :] if url.startswith(prefix) else None


def video_scenes(url: str) -> list[Scene] | None:
    """The scripted segments of a library video (None: not in the library)."""
    name = _name(url, "videos")
    return _VIDEOS.get(name) if name else None


def image_scene(url: str) -> tuple[str, str] | None:
    """(description, on-screen text) of a library image (None: not in the library)."""
    name = _name(url, "images")
    return _IMAGES.get(name) if name else None
