"""PyTorch side of wwm: the whole-word masking collator for the Hugging Face Trainer."""

from wwm_torch.collator import WholeWordMaskingCollator, content_example_id

__all__ = ["WholeWordMaskingCollator", "content_example_id"]
