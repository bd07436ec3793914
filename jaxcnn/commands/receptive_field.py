"""``jaxcnn receptive-field MODEL --input 256,256,3``: map size, start, jump and
receptive field of every layer."""
from __future__ import annotations

from .summary import input_shape


def register(subparsers) -> None:
    p = subparsers.add_parser("receptive-field", help="per-layer receptive fields (size, start, jump, rf)")
    p.add_argument("model", help="a zoo name (jaxcnn.models.available()) or 'package.module:function'")
    p.add_argument("--input", default=None, help="one example's shape without the batch, channels last: "
                                                 "H,W,C for a 2-D model, e.g. 224,224,3 (default: the model's "
                                                 "natural input)")
    p.add_argument("--num-classes", type=int, default=None, help="model output width (default: the model's own)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inspect.receptive_field import receptive_field
    from ..models import create
    model = create(args.model, num_classes=args.num_classes)
    shape = input_shape(args, model)
    print(receptive_field(model, (1,) + tuple(shape)))
    return 0
