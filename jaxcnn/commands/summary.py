"""``jaxcnn summary MODEL --input 224,224,3 [--num-classes N] [--batch B] [--model-option KEY=VALUE ...]``:
print the layer table.

``--input`` is one example's shape (H,W,C for a 2-D model, no batch axis) in every
command that takes it (summary, receptive-field, gradcheck, bench); the batch is ``--batch``."""
from __future__ import annotations

from .errors import UsageError
from .train import model_option


# what each input rank means (channels last, no batch axis): the form a message names
FORMS = {2: "L,C", 3: "H,W,C", 4: "D,H,W,C"}


def parse_shape(text: str, flag: str = "--input") -> tuple[int, ...]:
    """"224,224,3" -> (224, 224, 3): one example's shape, without the batch axis."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers like 224,224,3, got {text!r}") from None
    if not shape or any(v <= 0 for v in shape):
        raise UsageError(f"{flag} must be positive integers, got {text!r}")
    return shape


def input_shape(args, model, default=None) -> tuple[int, ...]:
    """``--input`` (one example: H,W,C for a 2-D model, no batch axis -- the same meaning in
    every command) if given, else ``default``, else the model's natural input shape.

    A model with a natural input shape takes exactly that many numbers: ``resnet18
    --input 224,224`` built a 1-D ResNet without a word; now it is a UsageError naming
    the form expected. A model without one (a user's ``Layer``) takes any rank."""
    name = getattr(args, "model", None) or getattr(model, "name", "the model")
    natural = getattr(model, "input_shape", None)
    if args.input:
        shape = parse_shape(args.input)
        if natural is not None and len(shape) != len(natural):
            form = FORMS.get(len(natural), ",".join(["N"] * len(natural)))
            raise UsageError(f"--input: {name} takes {form} ({len(natural)} numbers, without the batch), "
                             f"got {args.input}")
        return shape
    if default is not None:
        return tuple(default)
    if natural is None:
        raise UsageError(f"model {name!r} has no natural input shape: pass --input H,W,C")
    return tuple(natural)


def batched_shape(args, shape) -> tuple[int, ...]:
    """``(--batch, *shape)``; ``--batch`` must be >= 1."""
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    return (args.batch,) + tuple(shape)


def register(subparsers) -> None:
    p = subparsers.add_parser("summary", help="per-layer output shapes, parameters and mult-adds")
    p.add_argument("model", help="a zoo name (jaxcnn.models.available()) or 'package.module:function'")
    p.add_argument("--input", default=None, help="one example's shape without the batch, channels last: "
                                                 "H,W,C for a 2-D model, e.g. 224,224,3 (default: the model's "
                                                 "natural input)")
    p.add_argument("--num-classes", type=int, default=None, help="model output width (default: the model's own)")
    p.add_argument("--batch", type=int, default=1, help="batch size the shapes are shown for (default: 1)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE", type=model_option,
                   help="a model hyper-parameter, as for `jaxcnn train` (repeatable; `jaxcnn models MODEL` "
                        "lists them), e.g. --model-option width=32")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect.summary import summary
    from ..models import create
    model = create(args.model, num_classes=args.num_classes, **dict(args.model_option))
    print(summary(model, batched_shape(args, input_shape(args, model))))
    return 0
