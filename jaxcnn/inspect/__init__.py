"""Model inspection: ``summary`` (a torchinfo/Keras-style table of output shapes,
parameters and multiply-adds) and ``receptive_field`` (per-layer map size, jump, start
and receptive field; ``region`` gives the input window that one output unit sees).

Explanations (docs/explain.md): ``activations`` / ``layer_gradient`` / ``filters`` at any
layer or block path, the Grad-CAM family (``grad_cam``, ``cam``), Captum-style
attributions (``saliency``, ``grad_x_input``, ``integrated_gradients``, ``smoothgrad``,
``occlusion``, ``occlusion_sweep``), ``max_response`` and adversarial images (``fgsm``,
``pgd``)."""
from .receptive_field import RFRow, RFTable, receptive_field, region  # noqa: F401
from .summary import Summary, summary  # noqa: F401
from ._trace import trace  # noqa: F401  (one abstract trace of a network: shapes + leaf records)
from .activations import activations, filters, layer_gradient, layer_names  # noqa: F401
from .cam import cam, grad_cam  # noqa: F401
from .attribution import (IG_METHODS, grad_x_input, integrated_gradients, occlusion,  # noqa: F401
                          occlusion_sweep, saliency, smoothgrad)
from .adversarial import fgsm, pgd  # noqa: F401
from .maximize import max_response  # noqa: F401
