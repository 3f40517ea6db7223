"""One module per DVC stage; the notebooks call these functions and plot.

    pretrain_world -> teacher_data -> train_generator@<name> -> evaluate@<variant> -> ablation (tables 5, 6)
                                           \\-> train_assistant@<name> -> evaluate_assistant@<name> -> table 4
                                                                                      \\-> fidelity
    pretrain_world -> fidelity_probe, which judges the drawings of every evaluation (CAFE-mini)

Every stage reads ``params.yaml`` through :class:`~cafe_core.workbench.config.Params`, takes its
locations from :class:`~cafe_core.workbench.paths.ProjectPaths`, writes atomically, and can be
killed and run again: training resumes from its checkpoint, cached features and data are reused.
``python -m cafe_core.workbench.stages STAGE [NAME]`` (:mod:`.__main__`) runs one without its
notebook, e.g. under ``accelerate launch``.
"""
