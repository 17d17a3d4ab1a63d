"""An open_clip model: texts and images embedded into one space, under the shared batching policy.

`source` says where the weights come from, exactly as `open_clip.create_model_and_transforms(
model_id, pretrained=source)` takes it: a pretrained tag (`openai`, `laion2b_s34b_b79k`, fetched
into `<cache>/open_clip` where a hub is reachable) or a local checkpoint file (also `package:`).
`random:<seed>` builds the architecture with random weights drawn from that seed, so its vectors
are the same on every machine: the offline test and demo model, never one to serve. An
architecture open_clip does not ship is registered from `model_config_path` first (a JSON config
named like the architecture: relative to the project root, or absolute).

Images are preprocessed with the model's own inference transform; texts are tokenized with its
own tokenizer, and windowed like any text when longer than its context (77 tokens for CLIP).
"""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gpu_ops.encoder import SPECIAL_TOKENS, EncodedBatch
from gpu_ops.local_encoder import LocalEncoder
from gpu_ops.registry import RANDOM_WEIGHTS, ModelSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _register_config(spec: ModelSpec) -> None:
    import open_clip

    path = PROJECT_ROOT / spec.model_config_path
    if path.stem != spec.model_id:
        raise ValueError(f"model {spec.key}: open_clip names an architecture after its config file, {path.name}")
    if spec.model_id not in open_clip.list_models():
        open_clip.add_model_config(path)


def create_open_clip(spec: ModelSpec, cache_dir: Path, device: str, precision: str):
    """(model, inference transform, tokenizer) of the spec, in eval mode on `device`."""
    import open_clip

    if spec.model_config_path:
        _register_config(spec)
    options = {"precision": precision, "device": device}
    if spec.random_weights:
        # The seed draws the weights alone: the caller's random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(spec.source.removeprefix(RANDOM_WEIGHTS)))
            model, _, preprocess = open_clip.create_model_and_transforms(spec.model_id, pretrained=None, **options)
    else:
        pretrained = spec.resolved_source(cache_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model_id, pretrained=pretrained, cache_dir=str(cache_dir / "open_clip"), **options
        )
    return model.eval(), preprocess, open_clip.get_tokenizer(spec.model_id)


def clip_token_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """Character spans of the BPE tokens CLIP's SimpleTokenizer makes of `text`.

    The tokenizer splits words with its own pattern (case-insensitive) and cuts each lowercased
    word into byte-level BPE pieces: a piece's span follows from the bytes it covers. Its ftfy and
    HTML-entity clean-up is not replayed, so a text with `&amp;` counts a few tokens more than the
    model sees, which only makes windows shorter.
    """
    spans = []
    for match in tokenizer.pat.finditer(text):
        word = match.group().lower()
        pieces = tokenizer.bpe("".join(tokenizer.byte_encoder[b] for b in word.encode("utf-8"))).split(" ")
        if len(word) != len(match.group()):
            # Lowercasing changed the length (rare scripts): every piece gets the whole word's span.
            spans += [match.span()] * len(pieces)
            continue
        char_of_byte = [index for index, char in enumerate(word) for _ in char.encode("utf-8")]
        position = 0
        for piece in pieces:
            length = len(piece.removesuffix("</w>"))
            first, last = char_of_byte[position], char_of_byte[position + length - 1]
            spans.append((match.start() + first, match.start() + last + 1))
            position += length
    return spans


class OpenClipEncoder(LocalEncoder):
    """An open_clip model; the same interface as SentenceTransformerEncoder plus `encode_images`."""

    def __init__(
        self,
        spec: ModelSpec,
        cache_dir: Path,
        device: str = "auto",
        token_budget: int | None = None,
        max_batch_items: int | None = None,
    ):
        from open_clip.tokenizer import SimpleTokenizer

        super().__init__(spec, device, token_budget, max_batch_items)
        precision = "fp16" if self.dtype == "float16" else "fp32"
        self.model, self.preprocess, self.tokenizer = create_open_clip(spec, cache_dir, self.device, precision)
        if not isinstance(self.tokenizer, SimpleTokenizer):
            raise ValueError(
                f"model {spec.key}: {type(self.tokenizer).__name__} gives no token offsets to window texts on; "
                "CLIP's SimpleTokenizer does"
            )
        self.context_length = self.tokenizer.context_length
        if spec.max_tokens > self.context_length:
            raise ValueError(
                f"model {spec.key}: max_tokens {spec.max_tokens} exceeds the context of {self.context_length}"
            )
        # What one image costs a forward pass in the batching policy's unit: a ViT's patches and class
        # token; other image towers are costed like a ViT-B/32 (50).
        grid = getattr(self.model.visual, "grid_size", None)
        self.image_tokens = grid[0] * grid[1] + 1 if grid else 50
        # open_clip's fp16 keeps some weights (LayerNorm, embeddings) in fp32 and expects half pixels.
        self.pixel_dtype = torch.float16 if self.dtype == "float16" else torch.float32

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's tokens, without special tokens and without truncation."""
        return [clip_token_spans(self.tokenizer, text) for text in texts]

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode():
            vectors = self.model.encode_text(tokens, normalize=self.spec.normalize)
        return vectors.float().cpu().numpy()

    def _encode_image_batch(self, pixels: list[torch.Tensor]) -> np.ndarray:
        batch = torch.stack(pixels).to(self.device, dtype=self.pixel_dtype)
        with torch.inference_mode():
            vectors = self.model.encode_image(batch, normalize=self.spec.normalize)
        return vectors.float().cpu().numpy()

    def encode_texts(self, texts: list[str], token_counts: list[int] | None = None) -> EncodedBatch:
        """Vectors of `texts` (CLIP's text tower) in their order; `token_counts` spare a tokenizer pass.

        The tokenizer pads every text to the full context, so that is what a text costs a batch.
        """
        if token_counts is None:
            token_counts = [len(spans) for spans in self.token_spans(texts)]
        tokens = sum(min(count + SPECIAL_TOKENS, self.spec.max_tokens) for count in token_counts)
        return self._encode_in_batches(self._encode_text_batch, texts, [self.context_length] * len(texts), tokens)

    def encode_images(self, images: Iterable[Image.Image]) -> EncodedBatch:
        """Vectors of `images` (RGB, upright) in their order, from CLIP's image tower.

        Each image is preprocessed to the model's resolution as it comes, so a lazy iterable holds
        one decoded photo in memory at a time, never a whole group of them.
        """
        pixels = [self.preprocess(image) for image in images]
        costs = [self.image_tokens] * len(pixels)
        return self._encode_in_batches(self._encode_image_batch, pixels, costs, sum(costs))
