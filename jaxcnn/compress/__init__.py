"""Reduced-complexity networks: pruning, predefined sparsity, quantisation, binarisation
and a compressed checkpoint format, all pure functions over params pytrees."""
from .masks import (apply_masks, format_report, prune_masks, random_masks,  # noqa: F401
                    sparsity_report)
from .masked import MaskedState, current_masks, masked  # noqa: F401
from .schedules import iterative, one_shot, polynomial  # noqa: F401
from .quantize import (SCHEMES, QParams, dequantize, fake_quant, fake_quant_ste, fake_quantize,  # noqa: F401
                       minmax, observe, qparams, quantize, quantize_weights)
from .int8 import (INPUT_SCALES, calibrate, fake_int8_apply, input_scales_meta, int8_apply,  # noqa: F401
                   kernel_axes, stored_qparams)
from .binarize import binarize, sign, sign_ste, xnor_alpha  # noqa: F401
from .wrap import binary_model, qat_model, transformed_model  # noqa: F401
from .storage import (Compressed, CompressedFileError, float_bytes, load_compressed, read_compressed,  # noqa: F401
                      save_compressed)
from .runs import open_run, restore_compressed_run  # noqa: F401
from .settings import check_settings  # noqa: F401
