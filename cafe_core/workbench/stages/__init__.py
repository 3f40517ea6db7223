"""One module per DVC stage; the notebooks call these functions and plot.

    pretrain_world -> teacher_data -> train_generator@<name> -> guidance -> train_assistant@<name>
        -> evaluate@<variant> -> ablation_* (tables 4, 5, 6), fidelity -> report
    pretrain_world -> fidelity_probe, which judges the drawings of every evaluation (CAFE-mini)
    teacher_data -> review -> train_generator@human; train_generator@main, train_assistant@mse
        -> self_distill -> finetune_generator@<name> (G main fine-tuned) -> evaluate -> ablation_selfdistill

Each G and M is trained once per training seed (``params.yaml: seeds``), and each evaluation
scores every seed on the same held-out cases, so the tables' intervals cover both.

Every stage reads ``params.yaml`` through :class:`~cafe_core.workbench.config.Params`, takes its
locations from :class:`~cafe_core.workbench.paths.ProjectPaths`, writes atomically, and can be
killed and run again: training resumes from its checkpoint, cached features and data are reused.
``python -m cafe_core.workbench.stages STAGE [NAME]`` (:mod:`.__main__`) runs one without its
notebook, e.g. under ``accelerate launch``.
"""
