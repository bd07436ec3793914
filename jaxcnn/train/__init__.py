"""Training: the train state, pure train/eval steps, optimisers, the ``fit`` loop under
jit / pmap / sharded parallelism, orbax checkpoints, metrics and multi-process setup."""
from .checkpoint import checkpoint_manager, restore, restore_params, save  # noqa: F401
from .loop import FitResult, evaluate, evaluate_model, fit  # noqa: F401
from .metrics import MetricsWriter, NonFiniteLossError, read_metrics  # noqa: F401
from .optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule  # noqa: F401
from .parallel import MODES as PARALLEL_MODES, Runner, make_runner, pad_batch  # noqa: F401
from .state import TrainState, abstract_train_state, create_train_state  # noqa: F401
from .step import PRECISIONS, make_eval_step, make_multi_step, make_train_step  # noqa: F401
