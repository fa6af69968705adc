"""Checks for the notebooks' exercises.

Each exercise in a notebook is a function the student completes between nbgrader's
`### BEGIN SOLUTION` / `### END SOLUTION` markers; the cell after it calls a check from
here, e.g. `exercises.check_gaussian_log_prob(gaussian_log_prob)`. A check runs the
student's function on fresh random inputs, compares it with the reference and, when it
is wrong, raises `ExerciseError` with one sentence saying how: the typical mistake it
recognises (declared with the exercise), or else not implemented, wrong shape, not finite,
wrong sign, off by a constant factor or offset, or just different.

Each exercise is declared as data in the submodule of its topic (an `Exercise`: reference,
input `Case`s, known `Mistake`s and `Symptom`s, see `_core`); declaring one registers it in
`EXERCISES`, and its check `check_<name>` is re-exported here.
"""

from ._core import (  # noqa: F401
    EXERCISES, Case, Crash, Exercise, ExerciseError, Mistake, Symptom, check, compare, random_state, run_check,
)
from .welcome import check_gaussian_log_prob  # noqa: F401
from .normalizing_flows import check_coupling_log_det, check_linear_pushforward_log_prob  # noqa: F401
from .normalizing_flows import check_coupling_inverse  # noqa: F401
from .neural_odes import check_adjoint_rhs, check_rk4_step  # noqa: F401
from .cnf import check_augmented_dynamics, check_hutchinson_divergence  # noqa: F401
from .cnf import check_ffjord_log_prob  # noqa: F401
from .sdes import check_euler_maruyama_step, check_stationary_density  # noqa: F401
from .sdes import check_family_drift  # noqa: F401
from .score_matching import check_dsm_loss, check_tweedie_denoiser  # noqa: F401
from .langevin import check_geometric_sigmas, check_langevin_step  # noqa: F401
from .langevin import check_annealed_langevin  # noqa: F401
from .diffusion import check_cfg_eps, check_ddim_step, check_q_sample  # noqa: F401
from .diffusion import check_posterior_variance  # noqa: F401
from .flow_matching import check_conditional_field, check_ot_pair  # noqa: F401
from .flow_matching import check_cfm_weight  # noqa: F401
from .rectified_flow import check_logit_normal_density, check_reflow_targets, check_straightness_estimate  # noqa: F401
from .inpainting import check_inpaint_merge  # noqa: F401
from .inpainting import check_superres_merge  # noqa: F401
from .dit import check_guided_velocity, check_modulate, check_patchify  # noqa: F401
from .dit import check_gate_gradient  # noqa: F401
