"""python -m lapa_models <command> ...: the model-layer commands (data, laq, policy, bench) without the
ROS layer, e.g. for `torchrun -m lapa_models laq train ...` on a GPU node. `lapa` has them all."""
import sys

from .commands import MODEL_COMMANDS, run_program

if __name__ == "__main__":
    sys.exit(run_program(MODEL_COMMANDS, "python -m lapa_models", __doc__.split("\n\n")[0]))
