"""Product defaults of the policy that several entry points share (no imports: cheap for CLIs and launch).

`DEFAULT_ENSEMBLE_ALPHA`: temporal ensembling of overlapping chunks (`dm1.policy.ensemble`), the weight of the
newest prediction. 0.5 since 2026-11-29: with it the bundled model lifted the cube more often, in-process and
through the full ROS 2 stack, than without ensembling (1.0); the measurements are in docs/ablation.md
("Temporal ensembling"). Pass 1.0 to turn it off.
"""

DEFAULT_ENSEMBLE_ALPHA = 0.5
