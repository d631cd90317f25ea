"""Same seed, same result; different seed, different result (issue 10, part 3).

For each bundle, a fresh tiny training run (``reliability_runs.SPECS``, CPU, one thread) with seed 0 is compared with
the session's seed-0 reference run (shared with test_resume.py): results tables and trained weights must be
bit-identical. A run with another seed must differ (so that the equality above is not trivially true, e.g. because
the seed were ignored).

sperm_emd runs after the reference read the reference's synthetic videos (``--dataset_dir``): the bundle's H.264
video writer is not reproducible (see ``reliability_runs.Spec.share_data``): the same frames written twice decode
to different pixels, so two fresh runs would not see the same data.
"""

from __future__ import annotations

import pytest
from reliability_runs import BUNDLES, assert_same_outcome, max_weight_difference, outcome, reference_run, train

pytestmark = pytest.mark.slow
# seeds 1 and 2 of the aneurysm synthetic generator put a landmark just outside a 32^3 volume (the loader rejects the
# case), so the "other seed" is 3 for every bundle
OTHER_SEED = 3


@pytest.mark.parametrize("name", BUNDLES)
def test_same_seed_same_metrics_and_weights(name, tmp_path):
    ref_root, _ = reference_run(name)
    train(name, tmp_path / "again", seed=0)
    assert_same_outcome(name, outcome(name, ref_root), outcome(name, tmp_path / "again"), "rerun with seed 0")

    other_root, _ = reference_run(name, OTHER_SEED)
    diff = max_weight_difference(outcome(name, ref_root), outcome(name, other_root))
    assert diff > 1e-3, f"{name}: seed {OTHER_SEED} trained the same weights as seed 0 (max difference {diff:.2e})"

