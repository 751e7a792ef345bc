"""The LAPA benchmark in simulation: scratch vs LAPA vs action-pretrained, the paper's protocol as one
command (`lapa benchmark`). config.py: what a run is and its presets; run.py: the steps; stats.py:
intervals and the gap-closure ratio; report.py: tables and plots."""
