"""Fast CPU backend: the reference's projection, with the tile lists and compositing in C++.

``model.rasterize_torch`` stays the oracle. This backend shares its projection (PyTorch,
differentiable) and replaces what follows by ``csrc/composite_cpu.cpp``: building the sorted
tile lists, and the compositing, the step that touches every pixel-Gaussian pair, as one
OpenMP task per tile, forward and backward, with the same constants
(``tests/test_render_cpu.py`` checks the lists, values and gradients against the reference).

The C++ is compiled with ``torch.utils.cpp_extension`` the first time it is needed (the
build is cached in ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``, under
a name from the source's content), so an
install needs nothing beyond a C++ compiler. ``cpu_kernels()`` builds or loads it at a
known point, saying so when it compiles; without a compiler the ``auto`` backend falls back
to the reference with one warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import threading
import time
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from common.atomic import write_atomic
from model.rasterize_torch import TILE_SIZE, project_ewa

SOURCE = Path(__file__).parent / "csrc" / "composite_cpu.cpp"


class CpuKernelError(RuntimeError):
    """The C++ compositing kernel could not be built."""


def _staged_source() -> tuple[str, Path]:
    """The extension's name and its source, copied to a folder named by the source's
    content and the torch installation. torch's build files name the source's path and the
    installation's include folders, so two checkouts at different paths (a clone beside a
    worktree), or two virtual environments (a CI clone's beside a development one), would
    otherwise rebuild the one extension in turn, each under the other's running processes;
    named so, each environment keeps its one build, and a changed source gets its own."""
    from torch.utils.cpp_extension import get_default_build_root

    code = SOURCE.read_bytes()
    digest = hashlib.sha256(code + str(Path(torch.__file__).parent).encode()).hexdigest()[:12]
    staged = Path(get_default_build_root()) / "gavs-sources" / digest / SOURCE.name
    if not staged.is_file():
        staged.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(staged, code)  # processes starting together each write it whole
    return f"gavs_composite_cpu_{digest}", staged


@cache
def cpu_kernels(verbose: bool = False) -> ModuleType:
    """The compiled kernels, built on first use (loaded from the cache later); raises
    ``CpuKernelError``."""
    # torch logs a warning about CUDA on import here that does not concern a CPU build
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load

    started = time.perf_counter()
    # Loading a built extension takes a fraction of a second and says nothing; a compile
    # takes about a minute, and says so once it is clearly one.
    said = threading.Event()

    def say() -> None:
        print("gavs: compiling the fast CPU renderer (once, about a minute)", file=sys.stderr, flush=True)
        said.set()

    notice = threading.Timer(2.0, say)
    notice.start()
    try:
        name, source = _staged_source()
        module = load(
            name=name,
            sources=[str(source)],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=verbose,
        )
    except (OSError, RuntimeError, ImportError) as error:  # no compiler, no ninja, a build error
        raise CpuKernelError(f"the fast CPU renderer did not build ({SOURCE.name}): {error}") from error
    finally:
        notice.cancel()
    if said.is_set():
        print(f"gavs: fast CPU renderer compiled ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return module


@cache
def cpu_kernels_available() -> bool:
    """True when the kernels build; otherwise warns once, naming why, and returns False."""
    try:
        cpu_kernels()
    except CpuKernelError as error:
        warnings.warn(f"{error}; rendering with the (slower) PyTorch reference instead", stacklevel=2)
        return False
    return True


class _Composite(torch.autograd.Function):
    """Compositing of sorted tile lists: ``(features [V*H*W, F], alpha [V*H*W])``."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, starts, gauss, grid):
        inputs = (means2d, conics, opacities, features, starts, gauss)
        image, alpha, final_t, used = cpu_kernels().forward(*inputs, *grid)
        ctx.save_for_backward(means2d, conics, opacities, features, starts, gauss, final_t, used)
        ctx.grid = grid
        return image, alpha

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        saved = ctx.saved_tensors
        grads = cpu_kernels().backward(grad_image.contiguous(), grad_alpha.contiguous(), *saved, *ctx.grid)
        return (*grads, None, None, None)


def rasterize_cpu(
    means: Tensor,  # [B, N, 3]
    quats: Tensor,  # [B, N, 4]
    scales: Tensor,  # [B, N, 3]
    opacities: Tensor,  # [B, N]
    features: Tensor,  # [B, N, F]
    viewmats: Tensor,  # [B, C, 4, 4]: C cameras for each of the B Gaussian sets
    Ks: Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    near: float,
    far: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Features ``[B * C, H, W, F]``, depth and alpha ``[B * C, H, W]``, float32 on the CPU:
    ``rasterize_torch``'s outputs for B Gaussian sets seen by C cameras each. The projection
    broadcasts each set over its cameras (no copy of means, rotations or scales)."""
    B, C = viewmats.shape[:2]
    V, (N, F) = B * C, features.shape[1:]
    projected = project_ewa(
        means[:, None],
        quats[:, None],
        scales[:, None],
        opacities[:, None],
        viewmats,
        Ks,
        width,
        height,
        near,
        far,
    )
    means2d, conics, depths, radii, visible = (t.flatten(0, 1) for t in projected)  # [V, N, ...]
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    with torch.no_grad():
        lists = (
            means2d.detach().float(),
            depths.detach().float(),
            radii,
            visible,
            tiles_x,
            tiles_y,
            TILE_SIZE,
        )
        starts, gauss = cpu_kernels().tile_lists(*lists)
    per_view = features[:, None].expand(B, C, N, F).flatten(0, 1)
    with_depth = torch.cat([per_view, depths[..., None]], dim=-1)

    def flat(t: Tensor, *shape: int) -> Tensor:
        return t.reshape(V * N, *shape).float().contiguous()

    image, alpha = _Composite.apply(
        flat(means2d, 2),
        flat(conics, 3),
        flat(opacities[:, None].expand(B, C, N)),
        flat(with_depth, F + 1),
        starts,
        gauss,
        (V, tiles_x, tiles_y, width, height, TILE_SIZE),
    )
    image, alpha = image.reshape(V, height, width, F + 1), alpha.reshape(V, height, width)
    depth = image[..., -1] / alpha.clamp(min=1e-10)
    return image[..., :-1], depth, alpha
