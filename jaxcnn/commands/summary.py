"""``jaxcnn summary MODEL [--input 224,224,3] [--num-classes N] [--model-option KEY=VALUE ...]``:
print the layer table."""
from __future__ import annotations

from .errors import UsageError
from .train import model_option


def parse_shape(text: str) -> tuple[int, ...]:
    """"224,224,3" -> (224, 224, 3) (without the batch axis)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--input must be comma-separated integers like 224,224,3, got {text!r}") from None
    if not shape or any(v <= 0 for v in shape):
        raise ValueError(f"--input must be positive integers, got {text!r}")
    return shape


def input_shape(args, model) -> tuple[int, ...]:
    """``--input`` if given, else the model's natural input shape (without the batch axis)."""
    if args.input:
        return parse_shape(args.input)
    if model.input_shape is None:
        raise UsageError(f"model {args.model!r} has no natural input shape: pass --input H,W,C")
    return tuple(model.input_shape)


def register(subparsers) -> None:
    p = subparsers.add_parser("summary", help="per-layer output shapes, parameters and mult-adds")
    p.add_argument("model", help="a zoo name (jaxcnn.models.available()) or 'package.module:function'")
    p.add_argument("--input", default=None, help="input shape without batch, NHWC, e.g. 224,224,3 "
                                                 "(default: the model's natural input)")
    p.add_argument("--num-classes", type=int, default=None, help="model output width (default: the model's own)")
    p.add_argument("--batch", type=int, default=1, help="batch size the shapes are shown for (default: 1)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE", type=model_option,
                   help="a model hyper-parameter, as for `jaxcnn train` (repeatable; `jaxcnn models MODEL` "
                        "lists them), e.g. --model-option width=32")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect.summary import summary
    from ..models import create
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    model = create(args.model, num_classes=args.num_classes, **dict(args.model_option))
    shape = input_shape(args, model)
    print(summary(model, (args.batch,) + tuple(shape)))
    return 0
