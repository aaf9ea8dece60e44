"""Runners: one module per artefact the book shows. Each ``run_*`` computes records through
:func:`vqdbook.results.load_or_run`; each ``*_frame`` renders stored records as a DataFrame.

=====================  ==========================================================================
module                 artefact
=====================  ==========================================================================
``adversarial``        adversarial examples x′ (cached) and the ``robust_accuracy`` record
``tables``             Tables 1-3 (Section 4.1)
``figures``            Figures 4, 5 (accuracy vs s, k, noise) and 7 (denoising, Section 4.3)
``reproduction``       the reproduction study: one change to the protocol at a time
``fig6``               Figure 6: the KL estimates of Section 4.2 (``kl`` records)
``certified``          Theorem 1's certified accuracy from those estimates (``certified`` records)
``radii``              certified radii per image (Theorem 1, estimated) beside randomized smoothing
                       (certified), the curves of certified accuracy against radius, and the KL
                       estimator on problems with a known answer
``adaptive``           attacks that know the quantizer (BPDA, EOT, APGD, Square), the per-image
                       worst case, the convergence study, the headline cells and the ε curves
``tquant``             Figure 8: classifiers trained on quantized images (t-pRD, t-swRD) under the
                       oblivious and the adaptive attacks, and their vote margins
=====================  ==========================================================================

The most used names are importable from here, e.g. ``from vqdbook.experiments import table_frame``.
"""

from __future__ import annotations

from .adaptive import adaptive_frame, convergence_frame, run_adaptive_grid
from .adversarial import (
    ATTACKS,
    BPDA_EOT_SAMPLES,
    NO_DEFENSE,
    adversarial_examples,
    classifier,
    robust_accuracy_record,
    run_robust_accuracy,
)
from .certified import certified_frame, run_certified
from .fig6 import fig6_claims, fig6_frame, kl_record, run_fig6, run_kl
from .figures import (
    denoising_examples,
    fig4_configs,
    fig5_configs,
    fig7_frame,
    figure_frame,
    run_fig4,
    run_fig5,
    run_fig7,
)
from .radii import certified_curves, curve_summary, run_radii, validation_frame
from .reproduction import VARIANTS, closest_variant, run_variants, variant_frame, variant_params, variant_summary
from .tables import (
    TABLE_ATTACKS,
    attack_strength_frame,
    run_table,
    table_agreement,
    table_cell_params,
    table_curves,
    table_frame,
    table_spec,
)

__all__ = [
    "ATTACKS", "BPDA_EOT_SAMPLES", "NO_DEFENSE", "adversarial_examples", "classifier", "robust_accuracy_record",
    "run_robust_accuracy", "certified_frame", "run_certified", "fig6_claims", "fig6_frame", "kl_record",
    "run_fig6", "run_kl", "denoising_examples", "fig4_configs", "fig5_configs", "fig7_frame", "figure_frame",
    "run_fig4", "run_fig5", "run_fig7", "VARIANTS", "closest_variant", "run_variants", "variant_frame",
    "variant_params", "variant_summary", "TABLE_ATTACKS", "attack_strength_frame", "run_table", "table_agreement",
    "table_cell_params", "table_curves", "table_frame", "table_spec", "certified_curves", "curve_summary",
    "run_radii", "validation_frame", "adaptive_frame", "convergence_frame", "run_adaptive_grid", "chapter_cells",
]


def chapter_cells(seed: int = 0) -> list[tuple[str, dict]]:
    """Every stored record the book renders at the image counts it uses, as ``(kind, params)``."""
    from . import adaptive, certified, fig6, figures, radii, reproduction, tables, tquant

    return [c for m in (tables, figures, reproduction, fig6, certified, radii, adaptive, tquant)
            for c in m.chapter_cells(seed)]
