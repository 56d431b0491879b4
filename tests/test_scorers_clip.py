"""The transformers CLIP backend, on a tiny randomly initialised CLIP written to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from vlnkit.perception.scorers import Views, create_scorer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer CLIP with a byte-level vocabulary, its tokenizer and image processor, saved offline."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny_clip")
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def panorama(n: int = 12) -> Views:
    rng = np.random.default_rng(0)
    return Views(rng.integers(0, 256, size=(n, 48, 48, 3), dtype=np.uint8))


def test_clip_scores_every_phrase_against_every_view(tiny_clip_dir: Path) -> None:
    scorer = create_scorer("clip", model_dir=tiny_clip_dir, batch_size=5)
    scores = scorer.similarity(panorama(), ["the red couch", "the kitchen"])
    assert scores.shape == (2, 12)
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    assert not np.allclose(scores[0], scores[0, 0])
    assert not scorer.needs_labels


def test_clip_scores_do_not_depend_on_batching_or_the_cache(tiny_clip_dir: Path) -> None:
    one = create_scorer("clip", model_dir=tiny_clip_dir, batch_size=12).similarity(panorama(), ["the sofa"])
    scorer = create_scorer("clip", model_dir=tiny_clip_dir, batch_size=1)
    scorer.similarity(panorama(), ["the sofa", "a lamp"])
    assert np.allclose(scorer.similarity(panorama(), ["the sofa"]), one, atol=1e-5)


def test_clip_needs_a_saved_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_scorer("clip", model_dir=tmp_path)


def test_unknown_scorer_names_are_refused() -> None:
    with pytest.raises(KeyError, match="available"):
        create_scorer("blip")
