"""The defaults training decides once: the ``jaxcnn`` command's flags, the library's
keyword defaults and the benchmarks in ``experiments/`` all read them from here.

The backward-pass default lives beside the modes it picks from
(:data:`jaxcnn.dispatch.DEFAULT_MODE`, re-exported as :data:`BACKPROP`)."""
from __future__ import annotations

from ..dispatch.mode import DEFAULT_MODE as BACKPROP  # noqa: F401

EPOCHS = 15                 # `jaxcnn train --epochs`
BATCH_SIZE = 64             # global training batch (`train`, and `compress`'s fine-tuning)
EVAL_BATCH_SIZE = 256       # evaluation passes (`eval`, `compress`'s accuracy, `explain`)
BENCH_BATCH_SIZE = 128      # benchmarks (`jaxcnn bench`, experiments/), as PyTorch's are timed
OPTIMIZER = "adamw"
LR = 3e-3                   # peak learning rate of a training run
MOMENTUM = 0.9              # for the "momentum" optimiser
WEIGHT_DECAY = 1e-4         # decoupled (adamw) or L2
SCHEDULE = "onecycle"
STEPS_PER_DISPATCH = 8      # training steps per call of the compiled program (`train --steps-per-dispatch`)
FINETUNE_LR = 1e-3          # `compress`'s fine-tuning: peak of a cosine decay from a trained model
FINETUNE_WEIGHT_DECAY = 0.0
