"""What each command does, as library functions: each takes plain arguments (a ``ModelSpec`` for
the model flags, a ``RepairConfig`` for repair), does the work, writes its files and returns an
``Outcome`` (the ``--json`` result and the summary lines). ``deeprepair.cli`` only parses, calls
one of these and prints.

    corrupt.corrupt_dataset       deeprepair corrupt
    training.train_to_file        deeprepair train
    training.train_style_to_file  deeprepair train-style
    evaluation.evaluate_to_folder deeprepair evaluate
    mine.mine_corruptions         deeprepair mine
    mine.mine_real                deeprepair mine --real
    repair.run_repair             deeprepair repair
    style.style_strip / style_figure   deeprepair style
    bench.run_bench / rebuild_report   deeprepair bench / report
    demo.demo_to_folder           deeprepair demo (demo.run_demo once data and model are resolved)

Each module is named after its command, but for ``training`` and ``evaluation``: ``deeprepair.train``
and ``deeprepair.evaluate`` are the library modules they call, and no module name appears twice in
the package.

Checks shared by the commands (data split, model against data, output folder, resume record)
and the progress-bar protocol (``Progress``, ``no_progress``) are in ``inputs``.
"""

from .inputs import ModelSpec, Outcome

__all__ = ["ModelSpec", "Outcome"]
