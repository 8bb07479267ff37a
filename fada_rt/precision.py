"""One precision vocabulary for the runtime, export and training: ``fp32``, ``fp16``, ``bf16``.

The runtime's ``--dtype``, the engine manifests' ``precision`` and the trainers' ``--mixed-precision``
all take these names; :meth:`Precision.parse` also accepts torch's spellings (``float16``) and dtypes,
and :attr:`Precision.dtype` / :attr:`Precision.accelerate` translate to torch and to accelerate.
"""

from __future__ import annotations

from enum import Enum

import torch


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def dtype(self) -> torch.dtype:
        return {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}[self]

    @property
    def accelerate(self) -> str:
        """accelerate's ``mixed_precision`` name (fp32 is "no")."""
        return "no" if self is Precision.FP32 else self.value

    @classmethod
    def parse(cls, value: str | torch.dtype | Precision | None) -> Precision:
        """``fp32|fp16|bf16`` (or float32/float16/bfloat16, or a torch dtype); None is fp32."""
        if value is None:
            return cls.FP32
        if isinstance(value, Precision):
            return value
        if isinstance(value, torch.dtype):
            for p in cls:
                if p.dtype == value:
                    return p
            raise ValueError(f"no precision for dtype {value}; use one of {', '.join(p.value for p in cls)}")
        name = _ALIASES.get(str(value).lower(), str(value).lower())
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown precision {value!r}; use one of {', '.join(p.value for p in cls)}") from None

    def __str__(self) -> str:
        return self.value


#: torch's and accelerate's spellings of the same three precisions.
_ALIASES = {"float32": "fp32", "no": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}

#: The names a command line offers (``choices=PRECISIONS``).
PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
