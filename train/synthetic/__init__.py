"""The synthetic talking-face world (docs/design.md §6): seeded identities, speech, motion, tiers."""

from train.synthetic.dataset import SyntheticClip, generate_dataset, make_clip

__all__ = ["SyntheticClip", "generate_dataset", "make_clip"]
