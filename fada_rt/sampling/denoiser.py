"""The one denoiser interface every sampler in this package talks to (docs/design.md §3, §4).

A sampler never knows which backend runs the network: the torch teacher/student, an
onnxruntime session or a TensorRT engine all implement :class:`Denoiser`, already bound
to one chunk's conditions (reference, audio, motion frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

#: CFG branches (docs/design.md §3.1): "a" = reference + audio, "r" = reference only (audio
#: tokens zeroed), "b" = neither reference nor audio.
BRANCHES: tuple[str, ...] = ("a", "r", "b")


@runtime_checkable
class Denoiser(Protocol):
    """An eps-prediction network already bound to one chunk's conditions (reference, audio, motion).

    Implemented by the torch teacher/student, an onnxruntime session and a TensorRT engine.

    Network timestep convention (brief / docs/design.md §3): the teacher gets the integer index
    ``clamp(round(1000 t) - 1, 0)`` as a float; the student gets ``1000 t`` (float). The
    samplers in this package pass the right one; the denoiser just consumes it.
    """

    #: True for a CFG-distilled student that takes (cfg_a, cfg_r) as input (1 branch/step).
    cfg_conditioned: bool

    def __call__(
        self,
        z: Tensor,
        timestep: Tensor,
        *,
        branches: Sequence[str],
        cfg: Tensor | None = None,
    ) -> Tensor:
        """Predict eps for each requested branch.

        z: (B, *S) latents; timestep: (B,) float network timestep; branches: subset/order of
        ("a", "r", "b"); cfg: (B, 2) float [cfg_a, cfg_r] when ``cfg_conditioned``, else None.
        Returns eps of shape (len(branches), B, *S), all branches evaluated as ONE batched forward.
        """
        ...


@dataclass(frozen=True, eq=False)
class SampleResult:
    """What a sampler hands back: the final latent and the NFE it spent.

    ``nfe`` counts denoiser evaluations per sample, one per CFG branch (the paper's NFE-D):
    teacher DDIM 25 x 3 = 75, balanced student 6 x 3 = 18, fast student 6 x 1 = 6.
    """

    z0: Tensor  # (B, *S)
    nfe: int
