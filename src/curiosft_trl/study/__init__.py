"""Experiments that check the paper's claims: arms that differ only in the SFT loss, trained over seeds, then
measured, with a verdict per claim read from 95% intervals of paired differences.

One recipe schema and one runner for both experiments (`curiosft-claims`: claims 1-2, `curiosft-study`: 1-5); a
recipe's `stages:` says which steps it runs. The modules:

- `config`: the recipe (`StudyConfig`, `load_study_config`), its grids expanded to arms (`expand_grids`), and the
  stage recipes parsed as each run will get them;
- `runs`: the arms, and one ordinary `curiosft-sft|rl|eval` run per arm, seed and stage in its own process;
- `study`: the runner, stage by stage (`run_study`), each stage resumable;
- `entropy`: teacher-forced token entropy on held-out solutions, by base-entropy quantile bucket;
- `stats`: means with Student's t intervals across seeds, and the verdict read from them;
- `report`: `report.json`, `report.md` and the plots, with the sections of the stages that ran (and a sweep's
  dose-response table, finding and plot where the recipe has grids).
"""
