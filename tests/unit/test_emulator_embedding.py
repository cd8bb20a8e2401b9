"""The emulator's meaningful vectors: texts about the same thing are near, others are not."""

from __future__ import annotations

import numpy as np
import pytest

from sync_service.emulator import content, library
from sync_service.emulator.embedding import embed_text, feature_embedding, terms
from sync_service.emulator.records import Feature

NAMES = [("multimodal-v1", 1408), ("clip-v1", 512)]


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_terms_are_lowercased_words_and_pairs_without_stop_words() -> None:
    assert terms("The Dog ran to THE park.") == [
        ("dog", 1.0),
        ("ran", 1.0),
        ("park", 1.0),
        ("dog ran", 0.5),
        ("ran park", 0.5),
    ]
    assert terms("the and of") == []


@pytest.mark.parametrize(("name", "size"), NAMES)
def test_same_subject_is_near_and_other_subjects_are_not(name: str, size: int) -> None:
    query = embed_text("a dog chasing a ball in the park", size, name)
    near = embed_text("The dog chases the red ball across the park.", size, name)
    far = embed_text("Quarterly revenue grew by four percent.", size, name)
    assert len(query) == size and abs(np.linalg.norm(query) - 1) < 1e-6
    assert cosine(query, near) > 0.4
    assert abs(cosine(query, far)) < 0.1


def test_embeddings_are_deterministic_and_each_vector_name_its_own_space() -> None:
    text = "glowing lava flows down the volcano"
    assert embed_text(text, 1408, "multimodal-v1") == embed_text(text, 1408, "multimodal-v1")
    # Same length, other name: another hashing, so another vector.
    assert embed_text(text, 1408, "multimodal-v1") != embed_text(text, 1408, "other-v1")


def test_features_with_the_same_text_differ_a_little() -> None:
    text = "two people talking in a kitchen"
    a = feature_embedding(text, "asset-a/0", 1408, "multimodal-v1")
    b = feature_embedding(text, "asset-b/0", 1408, "multimodal-v1")
    assert a != b
    assert cosine(a, b) > 0.99  # the noise is small: both are still about the same thing
    assert cosine(a, embed_text(text, 1408, "multimodal-v1")) > 0.99


def test_a_text_with_no_words_left_gets_a_vector_of_its_own() -> None:
    empty = embed_text("the of and", 64, "multimodal-v1")
    assert len(empty) == 64 and abs(np.linalg.norm(empty) - 1) < 1e-6
    assert empty != embed_text("to be or not", 64, "multimodal-v1")


def test_random_kind_keeps_the_vectors_of_before() -> None:
    url = "https://example.com/v.mp4"
    feature = Feature({}, url, 3, 0, {"description": "anything"})
    assert feature.vector(1408, "multimodal-v1", meaningful=False) == content.feature_vector(
        url, 3, 1408
    )


def test_library_videos_are_their_scripted_scenes() -> None:
    url = library.video_url("volcano-eruption.mp4")
    bodies = content.feature_bodies("video", url, None, 7)
    scenes = library.video_scenes(url)
    assert scenes is not None and len(bodies) == len(scenes) == content.feature_count(
        "video", url, 7
    )
    assert bodies[1]["description"] == scenes[1].description
    assert (bodies[1]["start_time"], bodies[1]["end_time"]) == (10.0, 20.0)
    assert content.image_texts(library.image_url("red-panda.jpg"))["text"] == "ZOO"
