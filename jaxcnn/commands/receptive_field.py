"""``jaxcnn receptive-field MODEL --input 256,256,3``: map size, start, jump and
receptive field of every layer."""
from __future__ import annotations

from .summary import parse_shape


def register(subparsers) -> None:
    p = subparsers.add_parser("receptive-field", help="per-layer receptive fields (size, start, jump, rf)")
    p.add_argument("model", help="a name from jaxcnn.models.available()")
    p.add_argument("--input", default=None, help="input shape without batch, NHWC, e.g. 224,224,3")
    p.add_argument("--num-classes", type=int, default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect.receptive_field import receptive_field
    from ..models import create
    model = create(args.model, num_classes=args.num_classes)
    shape = parse_shape(args.input) if args.input else model.input_shape
    print(receptive_field(model, (1,) + tuple(shape)))
    return 0
