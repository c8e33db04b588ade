"""LISA assembled from transformers and segment_anything blocks: compute only (loading: ``loading``).

    image --CLIP ViT (layer -2, patches)--> (1, 256, vision_width) --mm_projector--> (1, 256, hidden_size)
    prompt ids with the 256 image features spliced in --LLaMA--> hidden states (after norm)
    hidden state that predicted each [SEG] --text_hidden_fcs--> (n, 256) sparse prompts
    image --SAM ViT image encoder--> (1, 256, 64, 64) --mask decoder(prompts)--> masks, IoU

Parameter names are the checkpoint's, renamed by ``lisa_ros.model.loading``. The ``[SEG]``
head, SAM's prompt encoder and mask decoder always run in fp32: in fp16 the ``[SEG]``
embedding (norm ~200) overflows there.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM
from transformers.cache_utils import Cache

from lisa_ros.model.checkpoint_config import LisaConfig
from lisa_ros.model.sam import build_sam
from lisa_ros.model.tokenization import IMAGE_PLACEHOLDER

MASK_DECODE_BATCH = 16  # [SEG] prompts per SAM decoder call: bounds its (n, 32, 256, 256) upscaling memory
MASK_CHUNK_PIXELS = 16 * 1920 * 1080  # fewer per upsampling call on larger frames (an 8K frame: one mask at a time)


def masks_per_call(image_shape: tuple[int, int]) -> int:
    """How many masks one ``upsample_masks`` call takes to ``image_shape``: ~MASK_CHUNK_PIXELS pixels at most."""
    return max(1, min(MASK_DECODE_BATCH, MASK_CHUNK_PIXELS // (image_shape[0] * image_shape[1])))


class LisaModel(nn.Module):
    def __init__(self, config: LisaConfig, clip_config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        config.llama._attn_implementation = "sdpa"
        clip_config._attn_implementation = "sdpa"
        self.llm = LlamaForCausalLM(config.llama)
        self.vision_tower = CLIPVisionModel(clip_config)  # truncated at the selected layer
        self.mm_projector = nn.Linear(config.mm_hidden_size, hidden)
        self.text_hidden_fcs = nn.ModuleList([nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, config.out_dim), nn.Dropout(0.0),
        )])
        self.visual_model = build_sam(config.sam)

    @property
    def device(self) -> torch.device:
        return self.mm_projector.weight.device

    def clip_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, 224, 224) normalized -> (1, 256, hidden_size) projected patch features."""
        tower_dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        hidden = self.vision_tower(pixel_values=pixels.to(self.device, tower_dtype)).last_hidden_state
        return self.mm_projector(hidden[:, 1:].to(self.mm_projector.weight.dtype))  # CLS dropped

    def embed(self, ids: Sequence[int], image_features: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the image features in place of the placeholder: (1, L + 255, hidden_size)."""
        embeddings = self.llm.get_input_embeddings()
        if IMAGE_PLACEHOLDER not in ids:
            return embeddings(torch.tensor([list(ids)], device=self.device))
        at = list(ids).index(IMAGE_PLACEHOLDER)
        before = embeddings(torch.tensor(ids[:at], dtype=torch.long, device=self.device))
        after = embeddings(torch.tensor(ids[at + 1:], dtype=torch.long, device=self.device))
        return torch.cat([before, image_features[0].to(before.dtype), after])[None]

    def decoder_hidden(self, inputs_embeds: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """(1, L, hidden_size) embeddings -> (1, L, hidden_size) last-layer hidden states after the final norm."""
        output = self.llm.model(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=cache is not None)
        return output.last_hidden_state

    def next_token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., hidden_size) -> (..., vocab_size) fp32."""
        return self.llm.lm_head(hidden.to(self.llm.lm_head.weight.dtype)).float()

    def sam_image_embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) RGB 0..255 -> (1, 256, 64, 64) SAM image embedding."""
        encoder = self.visual_model.image_encoder
        padded = self.visual_model.preprocess(pixels.to(self.device, torch.float32))  # normalize, pad to 1024
        return encoder(padded.to(encoder.patch_embed.proj.weight.dtype))

    def decode_low_res(self, seg_hidden: torch.Tensor, image_embedding: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, hidden_size) [SEG] hidden states -> (n, 1, 256, 256) fp32 mask logits at SAM's low resolution and
        (n,) IoU predictions. Memory grows with n (n copies of the image embedding, an (n, 32, 256, 256)
        upscaling): callers pass at most MASK_DECODE_BATCH."""
        sam = self.visual_model
        prompts = self.text_hidden_fcs[0](seg_hidden.to(self.device, torch.float32))[:, None]  # (n, 1, 256)
        count, grid = prompts.shape[0], sam.prompt_encoder.image_embedding_size
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(count, -1, *grid)
        low_res, iou = sam.mask_decoder(
            image_embeddings=image_embedding.float(),  # (1, 256, 64, 64), repeated per prompt inside
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=prompts,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )  # (n, 1, 256, 256), (n, 1)
        return low_res, iou[:, 0]

    def upsample_masks(self, low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
                       ) -> torch.Tensor:
        """(n, 1, 256, 256) low-resolution logits -> (n, image_height, image_width) fp32 logits at
        ``original_size`` (n x 1024 x 1024 floats on the way): callers pass at most ``masks_per_call``."""
        return self.visual_model.postprocess_masks(low_res, input_size, original_size)[:, 0]

    def decode_masks(
        self, seg_hidden: torch.Tensor, image_embedding: torch.Tensor,
        input_size: tuple[int, int], original_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, hidden_size) [SEG] hidden states -> (n, image_height, image_width) fp32 mask logits at
        ``original_size`` and (n,) IoU predictions, in one batch (the reference's way; memory grows with n)."""
        low_res, iou = self.decode_low_res(seg_hidden, image_embedding)
        return self.upsample_masks(low_res, input_size, original_size), iou
