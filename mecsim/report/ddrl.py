"""The diffusion-policy papers' claims, tested on a finished sweep.

* DEdgeAI (arXiv 2412.18212, reference spec §8.2): learning curves of LAD-TS, D2SAC-TS, SAC-TS,
  DQN-TS and Opt-TS; their plateau (episodes 300–350) and the episode each converges at, beside
  the values read off the published figure (no CSVs are published).
* DDRL-AMSA (PhD-forum abstract): at least 18.22 % lower delay than DRLCoEdge and 13.54 % lower
  than SMCoEdge, tested per seed on paired runs (same seeds, same arrival traces).

Intervals are bootstrap intervals over seeds (`bootstrap_interval`, BCa unless stated).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..sweep import Experiment
from .data import default_point
from .stats import INTERVAL_NOTE, band

# spec §8.2, read off the published learning-curve figure: (plateau over episodes 300-350 in s, convergence episode)
DEDGEAI_READOFFS = {
    "dqn-ts": (9.45, 300),
    "sac-ts": (8.85, 200),
    "d2sac-ts": (8.45, 150),
    "ddrl-ats": (7.75, 60),
    "best-single": (7.4, None),
}
DEDGEAI_NAMES = {
    "ddrl-ats": "LAD-TS (ddrl-ats)",
    "d2sac-ts": "D2SAC-TS",
    "sac-ts": "SAC-TS",
    "dqn-ts": "DQN-TS",
    "best-single": "Opt-TS (best-single)",
}
PLATEAU_EPISODES = (300, 350)  # inclusive, as the published figure's inset
FINAL_EPISODES = 100  # a run's final level: the mean of its last 100 episodes
CONVERGENCE_WINDOW = 20  # trailing moving average
CONVERGENCE_BAND = 0.05  # converged: the moving average stays within 5 % of the final level from then on

AMSA_CLAIMS = {"drlcoedge": 18.22, "smcoedge": 13.54}  # % lower delay than the baseline (abstract)
AMSA_BASELINES = ["drlcoedge", "smcoedge", "amcoedge", "optimal"]
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def bootstrap_interval(values, level: float = 0.95, method: str = "BCa") -> tuple[float, float]:
    """Bootstrap interval of the mean over seeds (deterministic: a fixed resampling seed).

    Fewer than three values, or values that are all equal: the mean as both bounds (nothing to
    resample), NaN without values.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    if x.size < 3 or np.ptp(x) == 0:
        return float(x.mean()), float(x.mean())
    res = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=level,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method=method,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def convergence_episode(curve: pd.Series) -> int | None:
    """The first episode from which the trailing `CONVERGENCE_WINDOW`-episode mean of ``curve`` (indexed by
    episode) stays within `CONVERGENCE_BAND` of the run's final level (mean of its last `FINAL_EPISODES`
    episodes); None when it never settles."""
    curve = curve.sort_index()
    final = float(curve.tail(FINAL_EPISODES).mean())
    smooth = curve.rolling(CONVERGENCE_WINDOW, min_periods=CONVERGENCE_WINDOW).mean().dropna()
    inside = (smooth - final).abs() <= CONVERGENCE_BAND * abs(final)
    if smooth.empty or not inside.iloc[-1]:
        return None
    outside = inside[~inside]
    if outside.empty:
        return int(smooth.index[0])
    later = inside.index[inside.index > outside.index[-1]]
    return int(later[0])


def dedgeai_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed) of the online curves: start (first 10 episodes), plateau, final level,
    convergence episode."""
    online = df[df["phase"] == "online"]
    rows = []
    for (method, seed), run in online.groupby(["method", "seed"], sort=False):
        curve = run.set_index("episode")["mean_makespan"].sort_index()
        lo, hi = PLATEAU_EPISODES
        rows.append(
            {
                "method": method,
                "seed": int(seed),
                "episodes": int(curve.size),
                "start": float(curve.head(10).mean()),
                "plateau": float(curve.loc[lo:hi].mean()) if curve.index.max() >= hi else math.nan,
                "final": float(curve.tail(FINAL_EPISODES).mean()),
                "convergence": convergence_episode(curve)
                if run["method_kind"].iloc[0] == "learner"
                else None,
            }
        )
    return pd.DataFrame(rows)


def _name(method: str) -> str:
    return DEDGEAI_NAMES.get(method, method)


def _interval(x) -> str:
    lo, hi = bootstrap_interval(x)
    return f"{np.mean(x):.3f} ({lo:.3f}–{hi:.3f})"


def dedgeai_section(df: pd.DataFrame, exp: Experiment) -> list[str]:
    """The DEdgeAI table: plateau and convergence per method, beside the published read-offs."""
    runs = dedgeai_runs(df)
    if runs.empty:
        return []
    order = [m for m in exp.methods if m in set(runs["method"])]
    lo, hi = PLATEAU_EPISODES
    lines = [
        "## DEdgeAI: plateau and convergence against the published figure",
        "",
        f"Per seed: the online mean delay over episodes {lo}–{hi} (plateau) and over the last {FINAL_EPISODES} "
        f"episodes (final); the convergence episode is the first from which the trailing {CONVERGENCE_WINDOW}-episode "
        f"mean stays within {CONVERGENCE_BAND:.0%} of the run's final level. Mean over seeds with a 95 % BCa "
        "bootstrap interval; convergence as median [min–max] over seeds (never: the run had not settled). "
        "Published values are read off the paper's learning-curve figure (no data are published).",
        "",
        "| method | seeds | start (ep 0–9) | plateau (ep 300–350) | published plateau | final (last 100) "
        "| convergence episode | published convergence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in order:
        r = runs[runs["method"] == method]
        pub_plateau, pub_conv = DEDGEAI_READOFFS.get(method, (math.nan, None))
        conv = r["convergence"].dropna()
        never = int(r["convergence"].isna().sum())
        if method == "best-single":
            conv_text = "–"
        elif conv.empty:
            conv_text = f"never ({never} of {len(r)})"
        else:
            conv_text = f"{conv.median():.0f} [{conv.min():.0f}–{conv.max():.0f}]"
            conv_text += f", never in {never}" if never else ""
        lines.append(
            f"| {_name(method)} | {len(r)} | {_interval(r['start'])} | {_interval(r['plateau'])} "
            f"| {pub_plateau:.2f} | {_interval(r['final'])} | {conv_text} | {pub_conv if pub_conv else '–'} |"
        )
    lines += ["", *dedgeai_verdicts(runs), ""]
    return lines


def dedgeai_verdicts(runs: pd.DataFrame) -> list[str]:
    """The DEdgeAI claims in words: LAD-TS's order and its episodes saved against each baseline."""
    plateau = runs.groupby("method")["plateau"].mean()
    conv = runs.groupby("method")["convergence"].median()
    lines = []
    learners = [m for m in ("ddrl-ats", "d2sac-ts", "sac-ts", "dqn-ts") if m in plateau.index]
    ranked = sorted(learners, key=lambda m: plateau[m])
    lines.append(
        "* Plateau order, lowest first: "
        + " < ".join(f"{_name(m)} {plateau[m]:.3f} s" for m in ranked)
        + " (published: LAD-TS 7.75 < D2SAC-TS 8.45 < SAC-TS 8.85 < DQN-TS 9.45)."
    )
    if "ddrl-ats" in conv.index and math.isfinite(conv["ddrl-ats"]):
        parts = []
        for m, claimed in (("dqn-ts", 80), ("sac-ts", 70), ("d2sac-ts", 60)):
            if m in conv.index and math.isfinite(conv[m]) and conv[m] > 0:
                saved = 100 * (1 - conv["ddrl-ats"] / conv[m])
                parts.append(f"{saved:.0f} % fewer than {_name(m)} (claimed {claimed} %)")
            elif m in conv.index:
                parts.append(f"{_name(m)}: no median convergence episode")
        lines.append("* LAD-TS's median convergence episode: " + "; ".join(parts) + ".")
    if "best-single" in plateau.index and "ddrl-ats" in plateau.index:
        gap = 100 * (plateau["ddrl-ats"] / plateau["best-single"] - 1)
        lines.append(f"* LAD-TS's plateau is {gap:+.1f} % against Opt-TS's (published: about +4.7 %).")
    return lines


def dedgeai_figure(df: pd.DataFrame, exp: Experiment, out_dir: Path) -> list[Path]:
    """Learning curves (mean over seeds, bootstrap band), the published plateaus and convergence episodes."""
    from .figures import _palette, _save, _setup

    online = df[df["phase"] == "online"].sort_values(["method", "seed", "episode"]).copy()
    if online.empty:
        return []
    plt, _ = _setup()
    online["smooth"] = online.groupby(["method", "seed"])["mean_makespan"].transform(
        lambda s: s.rolling(10, min_periods=1).mean()
    )
    order = [m for m in exp.methods if m in set(online["method"])]
    palette = _palette(order)
    fig, ax = plt.subplots(figsize=(8, 5))
    bands = band(online, ["method", "episode"], "smooth")
    for method in order:
        b = bands[bands["method"] == method]
        ax.plot(b["episode"], b["mean"], color=palette[method], label=_name(method), linewidth=1.2)
        ax.fill_between(b["episode"], b["lo"], b["hi"], color=palette[method], alpha=0.2, linewidth=0)
        plateau, conv = DEDGEAI_READOFFS.get(method, (None, None))
        if plateau is not None:
            ax.hlines(plateau, *PLATEAU_EPISODES, color=palette[method], linestyle="--", linewidth=1.5)
        if conv is not None:
            ax.axvline(conv, color=palette[method], linestyle=":", linewidth=0.8)
    ax.axvspan(*PLATEAU_EPISODES, color="0.9", zorder=0)
    ax.set_xlabel("episode")
    ax.set_ylabel("mean delay per task (s)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    seeds = online["seed"].nunique()
    ax.set_title(f"{exp.name}: online learning curves, {seeds} seeds, trailing mean over 10 episodes")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    caption = (
        "Lines: mean over seeds of the online mean delay (exploration included, as published); bands: "
        f"{INTERVAL_NOTE}. Dashed over episodes 300-350 (shaded): the published plateaus; dotted: the "
        "published convergence episodes (both read off the paper's figure)."
    )
    return _save(fig, out_dir, "dedgeai-curves", caption)


def amsa_paired(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """Per setting and baseline at the default point: DDRL-AMSA's per-seed delay reduction (%) on paired
    seeds, its mean and BCa interval, and the verdict on the abstract's claims."""
    ids = summary["method"].isin(["ddrl-amsa", *AMSA_BASELINES])
    tagged = default_point(summary[ids], members, exp)
    twice = tagged.duplicated(["setting", "method", "seed"])
    if twice.any():  # pairing by seed needs one cell per (setting, method, seed)
        raise ValueError(
            f"several default-point cells per seed: {tagged.loc[twice, ['setting', 'method', 'seed']]}"
        )
    rows = []
    for setting, part in tagged.groupby("setting", sort=False):
        amsa = part[part["method"] == "ddrl-amsa"].set_index("seed")["makespan"]
        if amsa.empty:
            continue
        for base in AMSA_BASELINES:
            other = part[part["method"] == base].set_index("seed")["makespan"]
            seeds = amsa.index.intersection(other.index)
            if seeds.empty:
                continue
            cut = 100 * (1 - amsa[seeds] / other[seeds])
            lo, hi = bootstrap_interval(cut.to_numpy())
            claim = AMSA_CLAIMS.get(base, math.nan)
            rows.append(
                {
                    "setting": setting,
                    "baseline": base,
                    "seeds": len(seeds),
                    "amsa": float(amsa[seeds].mean()),
                    "baseline_makespan": float(other[seeds].mean()),
                    "reduction": float(cut.mean()),
                    "lo": lo,
                    "hi": hi,
                    "wins": int((cut > 0).sum()),
                    "claim": claim,
                    "verdict": claim_verdict(lo, hi, claim),
                }
            )
    return pd.DataFrame(rows)


def claim_verdict(lo: float, hi: float, claim: float | None) -> str:
    """An "at least ``claim`` %" claim against a 95 % interval of the reduction ("" without a claim)."""
    if claim is None or not math.isfinite(claim):
        return ""
    if lo >= claim:
        return "reproduced"
    if hi < claim:
        return "not reproduced"
    return "not decided (the interval contains the claim)"


def amsa_section(summary: pd.DataFrame, members: pd.DataFrame, exp: Experiment) -> list[str]:
    paired = amsa_paired(summary, members, exp)
    if paired.empty:
        return []
    lines = [
        "## DDRL-AMSA's claims (paired seeds)",
        "",
        "Claim (PhD-forum abstract): DDRL-AMSA lowers the offloading delay by at least 18.22 % against DRLCoEdge "
        "and 13.54 % against SMCoEdge. Per seed: 1 − DDRL-AMSA's make-span / the baseline's (last 50 online "
        "episodes for learners), same seed and arrival traces; mean over seeds with a 95 % BCa bootstrap "
        "interval. *Reproduced*: the interval lies at or above the claim; *not reproduced*: below it.",
        "",
        "| setting | baseline | seeds | DDRL-AMSA make-span | baseline make-span | reduction (95 % CI) "
        "| seeds won | claim | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in paired.itertuples():
        claim = f"≥ {r.claim:.2f} %" if pd.notna(r.claim) else "–"
        lines.append(
            f"| {r.setting} | {r.baseline} | {r.seeds} | {r.amsa:.4f} | {r.baseline_makespan:.4f} "
            f"| {r.reduction:+.1f} % ({r.lo:+.1f} to {r.hi:+.1f}) | {r.wins}/{r.seeds} | {claim} | {r.verdict} |"
        )
    lines.append("")
    return lines
