"""``bench methods``: list the registered methods; regenerate the shipped encoder's weights."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import handle_errors

methods_app = typer.Typer(help="Batch-correction methods: list them, regenerate the shipped encoder.",
                          no_args_is_help=True)


@methods_app.command("list")
@handle_errors
def list_methods() -> None:
    """Show every registered method with its access level and one-line description."""
    from ..registry import available_methods, method_origin

    methods = available_methods()
    width = max(len(n) for n in methods) if methods else 4
    typer.echo(f"{'method':<{width}}  {'access':<9}  description")
    for name, cls in methods.items():
        origin = method_origin(name)
        extra = "" if origin == "platebench" else f"  [{origin}]"
        typer.echo(f"{name:<{width}}  {str(cls.access):<9}  {cls.description}{extra}")


@methods_app.command("pretrain-encoder")
@handle_errors
def pretrain_encoder(
    out: Annotated[Path, typer.Option(help="Where to write the weights (.safetensors; the JSON config goes "
                                           "next to it). The shipped file is benchmark/methods/weights/"
                                           "platebench_ssl.safetensors.")],
    n_images: Annotated[int, typer.Option(help="Pretraining images from the simulator's other labs and "
                                               "perturbations.")] = 4096,
    epochs: Annotated[int, typer.Option(help="Passes over the pretraining images.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the images and of the training.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the pretraining images in px.")] = 64,
) -> None:
    """Pretrain the `platebench-ssl` encoder from scratch, without labels (SimCLR), and save it."""
    from ..core.simclr import SSLSettings, pretrain_encoder as pretrain
    from ..core.ssl_encoder import save_encoder
    from ..core.training import stderr_progress
    from ..datasets.synthetic import pretraining_images
    from ..errors import BenchError

    if out.suffix != ".safetensors":
        raise BenchError(f"--out {out} must end in .safetensors (the JSON config is written next to it)")
    start = time.perf_counter()
    typer.echo(f"generating {n_images} pretraining images ({image_size} px, seed {seed})...", err=True)
    images = pretraining_images(n_images, seed, image_size=image_size)
    generated = time.perf_counter() - start
    backbone, config = pretrain(images, SSLSettings(epochs=epochs), seed, stderr_progress("pretrain"))
    config["image_generation_seconds"] = round(generated, 1)
    weights, meta = save_encoder(out, backbone, config)
    typer.echo(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and {meta} "
               f"in {time.perf_counter() - start:.0f} s")


def attach(app: typer.Typer) -> None:
    """Add the ``methods`` sub-app to the root ``bench`` app."""
    app.add_typer(methods_app, name="methods")
