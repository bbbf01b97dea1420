"""Success against LM compute: the loader keeps a multi-exit policy's compute figures, the plot draws them."""
import pandas as pd
import pytest

from metamanip.results.loader import _summary_metrics
from metamanip.results.plots import plot_success_vs_compute


def test_summary_compute_figures_reach_the_job_table():
    m = _summary_metrics({"average_reward": 2.0, "success_by_trial": [0.5, 1.0], "lm_layers_per_action": 3.5,
                          "lm_flops_per_action": 2.0e6, "mean_exit_layer": 3.5})
    assert m["lm_layers_per_action"] == 3.5 and m["lm_flops_per_action"] == 2.0e6 and m["success_trial_2"] == 1.0


def test_success_vs_compute_plots_one_point_per_budget_in_order_of_compute():
    jobs = pd.DataFrame({"average_reward": [2.5, 1.0, 2.4], "lm_flops_per_action": [8e6, 1e6, 3e6]})
    line = plot_success_vs_compute(jobs).axes[0].lines[0]
    assert list(line.get_xdata()) == [1.0, 3.0, 8.0] and list(line.get_ydata()) == [1.0, 2.4, 2.5]
    with pytest.raises(ValueError, match="multi-exit"):
        plot_success_vs_compute(pd.DataFrame({"average_reward": [1.0]}))
