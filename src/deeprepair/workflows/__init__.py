"""What each command does, as library functions: each takes plain arguments (a ``ModelSpec`` for
the model flags, a ``RepairConfig`` for repair), does the work, writes its files and returns an
``Outcome`` (the ``--json`` result and the summary lines). ``deeprepair.cli`` only parses, calls
one of these and prints.

    corrupt.corrupt_dataset       deeprepair corrupt
    training.train_to_file        deeprepair train
    training.train_style_to_file  deeprepair train-style
    evaluation.evaluate_to_folder deeprepair evaluate
    evaluation.mine_corruptions   deeprepair mine
    evaluation.mine_real          deeprepair mine --real
    repairing.run_repair          deeprepair repair
    style.style_strip / style_figure   deeprepair style
    bench.run_bench / rebuild_report   deeprepair bench / report
    demo.demo_to_folder           deeprepair demo (deeprepair.demo.run_demo once data and model are resolved)

Checks shared by the commands (data split, model against data, output folder, resume record)
are in ``inputs``.
"""

from .inputs import ModelSpec, Outcome

__all__ = ["ModelSpec", "Outcome"]
