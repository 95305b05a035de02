"""A self-contained HTML report on a MechWatch store: one file, figures embedded, nothing fetched.

    python -m mechwatch.report --database mechwatch.db [--reference NAME] [--since 2026-11-24T00:00] -o report.html

Per reference: its p-values and statistic against the calibration set, the flag rate over time against
alpha and its binomial 95% band, the terms and sites that drive the flags, the most anomalous flagged
events with their strongest terms, and each site's surprise over time. The store is opened read-only.

Needs matplotlib and pandas (`pip install 'mechwatch[report]'`).
"""
import argparse
import base64
import datetime as _dt
import html
import io
import json
import math
import os
import sys
from typing import List, Optional

import numpy as np

try:
    import matplotlib
    from matplotlib import dates as mdates
    from matplotlib import ticker
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D
    import pandas as pd
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("mechwatch.report needs matplotlib and pandas: pip install 'mechwatch[report]'") from e

from .store import LOWER_TAIL_KINDS, Store, _time_text

__all__ = ["build_report", "main"]

BLUE, RED, GREY, DARK, AMBER = "#3566a8", "#c8403a", "#9a9a9a", "#333333", "#e3a33b"
KIND_COLOURS = {"independence": "#9db4d8", "joint": "#3566a8", "interaction": "#5fb3a1", "transition": "#d67fb8",
                "dependence": "#a86f2c", "output": "#ee8c55", "local": "#7b4fa0", "residual": "#4f7b3a"}
KIND_ORDER = ["independence", "joint", "interaction", "output", "residual", "local", "transition", "dependence"]
STYLE = {
    "font.size": 10, "axes.titlesize": 11.5, "axes.titleweight": "bold", "axes.titlelocation": "left",
    "axes.labelsize": 10, "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#888888",
    "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.8, "axes.axisbelow": True,
    "legend.frameon": False, "legend.fontsize": 9, "xtick.color": "#444444", "ytick.color": "#444444",
    "figure.facecolor": "white", "savefig.facecolor": "white",
}
#: Bin widths the time axes choose from: the smallest that gives few enough bins.
BIN_WIDTHS = ["100ms", "200ms", "500ms", "1s", "2s", "5s", "10s", "15s", "30s", "1min", "2min", "5min", "10min", "15min", "30min",
              "1h", "2h", "3h", "6h", "12h", "1D", "2D", "7D", "14D", "30D"]
TOP_EVENTS = 15
MAX_SITE_PANELS = 24


# -- numbers ---------------------------------------------------------------------------------------

def binomial_band(n: np.ndarray, alpha: float, level: float = 0.95):
    """Per bin of n events, the central `level` interval of the flag rate if flags were Binomial(n, alpha):
    exact quantiles up to n = 20,000, the normal approximation above."""
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    lower, upper = np.full(len(n), np.nan), np.full(len(n), np.nan)
    for i, m in enumerate(np.asarray(n, dtype=int)):
        if m <= 0:
            continue
        if m <= 20000:
            k = np.arange(m)
            # log C(m, j) by the ratio C(m, j+1) / C(m, j) = (m - j) / (j + 1), all in numpy.
            log_choose = np.concatenate([[0.0], np.cumsum(np.log((m - k) / (k + 1)))])
            j = np.arange(m + 1)
            logpmf = log_choose + j * math.log(alpha) + (m - j) * math.log1p(-alpha)
            cdf = np.cumsum(np.exp(logpmf - logpmf.max()))
            cdf /= cdf[-1]
            lower[i] = np.searchsorted(cdf, lo_q) / m
            upper[i] = np.searchsorted(cdf, hi_q) / m
        else:
            sd = math.sqrt(m * alpha * (1 - alpha))
            lower[i] = max(0.0, m * alpha - 1.96 * sd) / m
            upper[i] = min(float(m), m * alpha + 1.96 * sd) / m
    return lower, upper


def choose_bins(times: "pd.Series", events: int):
    """Bin width for a time axis: hourly when that gives a readable number of bins, else the smallest width in
    BIN_WIDTHS giving at most min(48, events / 10) bins (at least 4 when the span allows)."""
    start, stop = times.min(), times.max()
    span = (stop - start).total_seconds()
    target = max(4, min(48, events // 10))
    for width in BIN_WIDTHS:
        if span / pd.Timedelta(width).total_seconds() + 1 <= target:
            return width
    return BIN_WIDTHS[-1]


def binned(frame: "pd.DataFrame", width: str) -> "pd.Series":
    """Each row's bin start (naive UTC, for matplotlib)."""
    return frame["time"].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor(width)


def _fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _short(text: str, size: int) -> str:
    return text if len(text) <= size else text[:size - 1] + "…"


def _fmt_time(t) -> str:
    if t is None or pd.isna(t):
        return "–"
    return pd.Timestamp(t).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S UTC")


def _width_label(width: str) -> str:
    td = pd.Timedelta(width)
    seconds = int(td.total_seconds())
    if td < pd.Timedelta("1s"):
        return f"{td.total_seconds() * 1000:.0f} ms"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            k = seconds // size
            return f"{k} {unit}{'s' if k != 1 else ''}" if k != 1 else f"1 {unit}"
    return width


# -- figures ---------------------------------------------------------------------------------------

def _png(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_percent = ticker.FuncFormatter(lambda x, _: f"{100 * x:.4g}%")


def _time_axis(ax, maxticks=9):
    locator = mdates.AutoDateLocator(minticks=2, maxticks=maxticks)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def figure_distribution(events: "pd.DataFrame", statistic: "pd.Series", calibration: np.ndarray, statistic_name: str,
                        alpha: float, n_calibration: int) -> str:
    """-log10 p of the events against the uniform expectation; the statistic against the calibration set."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10.5, 3.9), layout="constrained")
        ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
        n = len(events)
        logp = -np.log10(np.clip(events["p"].to_numpy(), 1e-300, 1))
        floor = -math.log10(1 / (n_calibration + 1)) if n_calibration else 3
        cap = float(min(12, max(3, math.ceil(floor) + 1, math.ceil(np.nanmax(logp) if n else 0))))
        step = 0.25 if cap <= 6 else 0.5
        edges = np.arange(0, cap + step / 2, step)
        clipped = np.minimum(logp, cap - 1e-9)
        flagged = events["flagged"].to_numpy()
        counts_ok, _ = np.histogram(clipped[~flagged], edges)
        counts_flag, _ = np.histogram(clipped[flagged], edges)
        centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        ax.bar(centres, counts_ok, widths * 0.92, color=BLUE, label="events")
        ax.bar(centres, counts_flag, widths * 0.92, bottom=counts_ok, color=RED, label="flagged events")
        expected = n * (10.0 ** -edges[:-1] - 10.0 ** -edges[1:])
        ax.step(edges, np.append(expected, expected[-1]), where="post", color=DARK, lw=1.4, ls="--",
                label="uniform p (exchangeable with calibration)")
        ax.axvline(-math.log10(alpha), color=AMBER, lw=1.6, label=f"alpha = {alpha:g}")
        ax.set_yscale("log")
        ax.set_ylim(0.5, max(10, (counts_ok + counts_flag).max(initial=1), expected.max(initial=1)) * 40)
        ax.set_xlim(0, cap)
        ax.set_xlabel("−log₁₀ p   (right = more anomalous; last bin collects everything beyond)")
        ax.set_ylabel("events per bin (log scale)")
        ax.set_title("p-values of traffic vs. the calibration expectation")
        ax.legend(loc="upper right", fontsize=8.5)

        stat = statistic.to_numpy(dtype=float)
        stat = stat[np.isfinite(stat)]
        cal = calibration[np.isfinite(calibration)]
        both = np.concatenate([stat, cal])
        positive = both.size and both.min() > 0 and both.max() / max(both.min(), 1e-12) > 30
        if both.size:
            lo, hi = both.min(), both.max()
            edges2 = (np.geomspace(lo, hi, 40) if positive else np.linspace(lo, hi if hi > lo else lo + 1, 40))
            flagged_stat = statistic[events["flagged"].to_numpy()].to_numpy(dtype=float)
            if cal.size:
                bx.hist(cal, edges2, weights=np.full(cal.size, 1 / cal.size), histtype="stepfilled", color=GREY,
                        alpha=0.45, label=f"calibration ({cal.size} traces)")
            bx.hist(stat, edges2, weights=np.full(stat.size, 1 / max(stat.size, 1)), histtype="step", color=BLUE, lw=1.8,
                    label=f"traffic ({stat.size} events)")
            if flagged_stat.size:
                bx.hist(flagged_stat, edges2, weights=np.full(flagged_stat.size, 1 / max(stat.size, 1)), histtype="stepfilled",
                        color=RED, alpha=0.75, label="of which flagged")
            if positive:
                bx.set_xscale("log")
            bx.set_ylim(0, bx.get_ylim()[1] * 1.45)
        bx.set_xlabel(statistic_name)
        bx.set_ylabel("fraction of each set")
        bx.set_title("Statistic: traffic vs. calibration set")
        bx.legend(loc="upper right", fontsize=8.5)
        return _png(fig, "p-value histogram and statistic distribution against the calibration set")


def figure_flag_rate(events: "pd.DataFrame", width: str, alpha: float) -> str:
    """Flag rate per time bin with alpha and the binomial 95% band; events per bin below."""
    bins = binned(events, width)
    grouped = events.assign(bin=bins).groupby("bin")["flagged"].agg(["size", "sum"])
    full = pd.date_range(grouped.index.min(), grouped.index.max(), freq=width)
    grouped = grouped.reindex(full, fill_value=0)
    n, k = grouped["size"].to_numpy(), grouped["sum"].to_numpy()
    rate = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    lower, upper = binomial_band(n, alpha)
    step = pd.Timedelta(width)
    left = grouped.index.to_pydatetime()
    centre = (grouped.index + step / 2).to_pydatetime()
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10.5, 4.8), layout="constrained")
        ax, cx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.6, 1]})
        edges = list(left) + [(grouped.index[-1] + step).to_pydatetime()]
        ax.stairs(np.nan_to_num(upper, nan=0), edges, baseline=np.nan_to_num(lower, nan=0), fill=True, color=AMBER,
                  alpha=0.22, label="95% band if the flag rate were alpha (binomial, per bin)")
        ax.axhline(alpha, color=AMBER, lw=1.6, label=f"alpha = {alpha:g}")
        outside = np.isfinite(rate) & (rate > np.nan_to_num(upper, nan=np.inf))
        inside = np.isfinite(rate) & ~outside
        ax.plot(centre, rate, color=BLUE, lw=1, alpha=0.6)
        ax.scatter(np.array(centre)[inside], rate[inside], s=22, color=BLUE, zorder=3, label="flag rate")
        if outside.any():
            ax.scatter(np.array(centre)[outside], rate[outside], s=34, color=RED, zorder=4, label="above the band")
        top = np.nanmax(np.concatenate([rate[np.isfinite(rate)], upper[np.isfinite(upper)], [alpha * 2]]))
        ax.set_ylim(0, min(1.02, top * 1.12 + 1e-9))
        ax.yaxis.set_major_locator(ticker.MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(_percent)
        ax.set_ylabel("flagged share")
        cx.bar(left, n - k, width=step * 0.9, align="edge", color=BLUE, alpha=0.55, label="events not flagged")
        cx.bar(left, k, width=step * 0.9, align="edge", bottom=n - k, color=RED, label="events flagged")
        cx.set_ylabel("events")
        cx.set_xlabel("time (UTC)")
        _time_axis(cx)
        handles, labels = ax.get_legend_handles_labels()
        more, more_labels = cx.get_legend_handles_labels()
        fig.legend(handles + more, labels + more_labels, loc="outside lower center", ncol=3, fontsize=8.5)
        fig.suptitle(f"Flag rate per {_width_label(width)} (UTC)", x=0.01, ha="left", fontweight="bold", fontsize=11.5)
        return _png(fig, "flag rate over time with alpha and its binomial band")


def figure_drivers(shares: "pd.DataFrame", alpha: float, flagged_count: int) -> str:
    """Per term, the share of flagged (and of unflagged) events whose term p <= alpha; a subject x kind heatmap."""
    top = shares.sort_values(["flagged_share", "term"], ascending=[False, True]).head(18).iloc[::-1]
    kinds = [k for k in KIND_ORDER if k in set(shares["kind"])] + sorted(set(shares["kind"]) - set(KIND_ORDER))
    subjects = list(dict.fromkeys(shares.sort_values("term")["subject"]))
    grid = np.full((len(subjects), len(kinds)), np.nan)
    for row in shares.itertuples():
        grid[subjects.index(row.subject), kinds.index(row.kind)] = row.flagged_share
    with matplotlib.rc_context(STYLE):
        height = max(3.8, 0.26 * len(top) + 1.4, 0.34 * len(subjects) + 1.6)
        fig = Figure(figsize=(10.5, height), layout="constrained")
        ax, hx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1]})
        y = np.arange(len(top))
        colours = [KIND_COLOURS.get(k, GREY) for k in top["kind"]]
        ax.barh(y + 0.17, top["flagged_share"], 0.34, color=colours, label="flagged events")
        ax.barh(y - 0.17, top["unflagged_share"], 0.34, color="#cfcfcf", label="unflagged events")
        ax.set_yticks(y, [f"{s}  {k}" for s, k in zip(top["subject"], top["kind"])])
        ax.set_xlim(0, min(1.0, math.ceil(max(top["flagged_share"].max(), top["unflagged_share"].max(), alpha) * 11) / 10))
        ax.xaxis.set_major_formatter(_percent)
        ax.axvline(alpha, color=AMBER, lw=1.2)
        ax.set_xlabel(f"share of events whose term p ≤ alpha ({alpha:g})")
        ax.set_title(f"Terms behind the {flagged_count} flags")
        handles = [Patch(color=KIND_COLOURS.get(k, GREY), label=k) for k in kinds]
        handles += [Patch(color="#cfcfcf", label="(unflagged events)"), Line2D([], [], color=AMBER, label="alpha")]
        ax.legend(handles=handles, loc="lower right", fontsize=8)
        ax.grid(axis="y", visible=False)

        masked = np.ma.masked_invalid(grid)
        cmap = matplotlib.colormaps["Reds"].with_extremes(bad="#f3f3f3")
        image = hx.imshow(masked, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        hx.set_xticks(range(len(kinds)), kinds, rotation=35, ha="right")
        hx.set_yticks(range(len(subjects)), subjects)
        hx.grid(False)
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                hx.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=8, color="white" if v > 0.55 else DARK)
        hx.set_title("By site / transition and kind")
        fig.colorbar(image, ax=hx, fraction=0.05, pad=0.03, format=ticker.PercentFormatter(1.0)).set_label(
            "share of flagged events, term p ≤ alpha")
        return _png(fig, "which terms and sites drive the flags")


def figure_site_surprise(sites: "pd.DataFrame", width: str, calibration: Optional["pd.DataFrame"]) -> str:
    """Per site, the median (and interquartile range) of the joint surprise per time bin, with the calibration
    set's median and 5-95% range of the same term."""
    names = list(dict.fromkeys(sites.sort_values("position")["site"]))[:MAX_SITE_PANELS]
    sites = sites.assign(bin=binned(sites, width))
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    step = pd.Timedelta(width)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10.5, 2.4 * nrows + 0.9), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
        calibrated = False
        for ax, name in zip(axes, names):
            values = sites[sites["site"] == name].groupby("bin")["joint_surprise"]
            q = values.quantile([0.25, 0.5, 0.75]).unstack()
            x = (q.index + step / 2).to_pydatetime()
            if calibration is not None and ("joint", name) in calibration.columns:
                c = calibration[("joint", name)].dropna().to_numpy()
                if c.size:
                    calibrated = True
                    lo, med, hi = np.quantile(c, [0.05, 0.5, 0.95])
                    ax.axhspan(lo, hi, color=GREY, alpha=0.18, lw=0)
                    ax.axhline(med, color=GREY, lw=1.3, ls="--")
            ax.fill_between(x, q[0.25], q[0.75], color=BLUE, alpha=0.18, lw=0)
            ax.plot(x, q[0.5], color=BLUE, lw=1.6, marker="o", ms=3)
            ax.set_title(name, fontsize=10.5)
            _time_axis(ax, maxticks=5 if ncols > 1 else 8)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel("joint surprise (nats)")
        handles = [Line2D([], [], color=BLUE, lw=1.6, marker="o", ms=3, label="traffic median per bin"),
                   Patch(color=BLUE, alpha=0.18, label="traffic interquartile range")]
        if calibrated:
            handles += [Line2D([], [], color=GREY, ls="--", label="calibration median"),
                        Patch(color=GREY, alpha=0.18, label="calibration 5–95%")]
        fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8.5)
        fig.suptitle(f"Per-site joint surprise per {_width_label(width)} (UTC)", x=0.01, ha="left",
                     fontweight="bold", fontsize=11.5)
        return _png(fig, "per-site joint surprise over time")


# -- data ------------------------------------------------------------------------------------------

def term_shares(store: Store, reference: str, since, alpha: float) -> "pd.DataFrame":
    """Per term: share of flagged and of unflagged events whose term p <= alpha (aggregated in SQLite)."""
    if "event_terms" not in store._tables:
        return pd.DataFrame(columns=["term", "kind", "subject", "flagged_share", "unflagged_share"])
    where, params = "WHERE r.name = ?", [reference]
    if since is not None:
        where += " AND e.received_at >= ?"
        params.append(_time_text(since))
    frame = store.query(f"""
        SELECT t.term, t.kind, t.subject, e.flagged, count(*) AS n, sum(t.p <= ?) AS hits
        FROM event_terms t JOIN events e ON e.id = t.event_id JOIN reference_models r ON r.id = e.reference_id
        {where} GROUP BY t.term, e.flagged""", [alpha] + params)
    if frame.empty:
        return pd.DataFrame(columns=["term", "kind", "subject", "flagged_share", "unflagged_share"])
    frame["share"] = frame["hits"] / frame["n"]
    wide = frame.pivot_table(index=["term", "kind", "subject"], columns="flagged", values="share").reset_index()
    wide.columns = [c if not isinstance(c, (int, np.integer)) else ("flagged_share" if c == 1 else "unflagged_share")
                    for c in wide.columns]
    for c in ("flagged_share", "unflagged_share"):
        if c not in wide:
            wide[c] = np.nan
    return wide.fillna({"unflagged_share": 0.0})


def strongest_terms(terms: "pd.DataFrame", count: int = 3) -> dict:
    """Per event: its `count` terms with the smallest p, formatted."""
    out = {}
    for event, group in terms.groupby("event"):
        best = group.sort_values(["p", "term"]).head(count)
        parts = []
        for row in best.itertuples():
            value = "" if pd.isna(row.value) else f", {row.value:.1f} nats"
            tail = " (low)" if row.kind in LOWER_TAIL_KINDS else ""
            parts.append(f"<span class='term' style='border-color:{KIND_COLOURS.get(row.kind, GREY)}'>"
                         f"<b>{html.escape(row.subject)}</b> {html.escape(row.kind)}{tail}: p={_fmt_p(row.p)}{value}</span>")
        out[event] = " ".join(parts)
    return out


# -- HTML ------------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, 'Segoe UI', 'DejaVu Sans', Helvetica, Arial, sans-serif; color: #222; background: #f5f6f8;
       margin: 0; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
header { background: #1f2d3d; color: #f2f4f7; padding: 22px 28px; }
header .inner { max-width: 1180px; margin: 0 auto; }
header h1 { margin: 0 0 6px; font-size: 24px; font-weight: 650; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0 0; font-size: 14px; }
header dt { color: #9fb0c3; } header dd { margin: 0; font-family: 'DejaVu Sans Mono', Menlo, monospace; font-size: 13px; }
section.reference { background: white; border-radius: 10px; box-shadow: 0 1px 3px rgba(0,0,0,.08); padding: 18px 24px 22px;
                    margin: 22px 0; }
h2 { font-size: 20px; margin: 0 0 4px; } h2 code { background: #eef2f7; padding: 1px 8px; border-radius: 5px; }
h3 { font-size: 16px; margin: 26px 0 4px; border-bottom: 1px solid #e4e7eb; padding-bottom: 4px; }
p.caption { color: #555; font-size: 13.5px; margin: 4px 0 8px; max-width: 980px; }
p.note { background: #fff8e6; border-left: 4px solid #e3a33b; padding: 8px 12px; color: #5b4a1e; }
img.figure { width: 100%; max-width: 1100px; display: block; margin: 6px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0 4px; }
.card { background: #f3f6fa; border-radius: 8px; padding: 8px 14px; min-width: 110px; }
.card .v { font-size: 19px; font-weight: 650; } .card .k { font-size: 12px; color: #5e6b78; text-transform: uppercase; letter-spacing: .03em; }
.card.small .v { font-size: 15px; padding-top: 3px; }
.card.alert { background: #fdecea; } .card.alert .v { color: #b3261e; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th { text-align: left; background: #eef1f5; padding: 6px 8px; font-weight: 600; white-space: nowrap; }
td { padding: 5px 8px; border-bottom: 1px solid #eceff3; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time { white-space: nowrap; }
td.mono, .mono { font-family: 'DejaVu Sans Mono', Menlo, monospace; font-size: 12px; }
span.term { display: inline-block; border-left: 4px solid; background: #f6f7f9; padding: 1px 6px; margin: 1px 4px 1px 0;
            border-radius: 3px; font-size: 12px; white-space: nowrap; }
span.state { padding: 1px 8px; border-radius: 10px; font-size: 12px; }
span.state.active { background: #e3f4e8; color: #1e6b35; } span.state.collecting { background: #fff1d6; color: #7a5300; }
nav a { margin-right: 14px; }
footer { color: #777; font-size: 12px; text-align: center; margin-top: 30px; }
"""


def _card(key: str, value: str, alert: bool = False, small: bool = False) -> str:
    classes = "card" + (" alert" if alert else "") + (" small" if small else "")
    return f"<div class='{classes}'><div class='v'>{html.escape(value)}</div><div class='k'>{html.escape(key)}</div></div>"


def _sites_text(sites) -> str:
    return ", ".join(f"{html.escape(n)} ({w})" for n, w in sites)


def _reference_table(refs: "pd.DataFrame") -> str:
    rows = []
    for r in refs.itertuples():
        rate = f"{r.flagged / r.events:.2%}" if r.events else "–"
        rows.append(
            f"<tr><td><a href='#ref-{html.escape(r.name)}'><b>{html.escape(r.name)}</b></a></td>"
            f"<td><span class='state {html.escape(r.state)}'>{html.escape(r.state)}</span></td>"
            f"<td>{html.escape(str(r.scorer))}</td><td class='num'>{r.alpha:g}</td>"
            f"<td class='num'>{r.fit_count:,}</td><td class='num'>{r.calibration_count:,}</td>"
            f"<td class='num'>{r.events:,}</td><td class='num'>{r.flagged:,}</td><td class='num'>{rate}</td>"
            f"<td>{_sites_text(r.sites)}</td></tr>")
    return ("<table><tr><th>reference</th><th>state</th><th>scorer</th><th>alpha</th><th>fit traces</th>"
            "<th>calibration</th><th>events</th><th>flagged</th><th>flag rate</th><th>sites (width)</th></tr>"
            + "".join(rows) + "</table>")


def _events_table(top: "pd.DataFrame", strongest: dict) -> str:
    rows = []
    for e in top.itertuples():
        meta = "" if e.meta is None else html.escape(json.dumps(e.meta, ensure_ascii=False)[:120])
        output = "–" if pd.isna(e.output) else str(int(e.output))
        rows.append(f"<tr><td class='num'>{e.event}</td><td class='mono time'>{html.escape(_fmt_time(e.time)[:19])}</td>"
                    f"<td class='mono time' title='{html.escape(str(e.id))}'>{html.escape(_short(str(e.id), 26))}</td><td class='num'>{output}</td>"
                    f"<td class='num'><b>{_fmt_p(e.p)}</b></td><td class='num'>{e.score:.4g}</td>"
                    f"<td>{strongest.get(e.event, '<i>no stored terms</i>')}</td><td class='mono'>{meta}</td></tr>")
    return ("<table><tr><th>event</th><th>time (UTC)</th><th>client id</th><th>output</th><th>p</th><th>score</th>"
            "<th>strongest terms (smallest p)</th><th>meta</th></tr>" + "".join(rows) + "</table>")


def reference_section(store: Store, ref, since) -> str:
    """The HTML section of one reference."""
    name = ref.name
    anchor = html.escape(name)
    head = [f"<section class='reference' id='ref-{anchor}'>",
            f"<h2>Reference <code>{html.escape(name)}</code> <span class='state {html.escape(ref.state)}'>{html.escape(ref.state)}</span></h2>",
            f"<p class='caption'>scorer <b>{html.escape(str(ref.scorer))}</b>"
            f"{' (' + html.escape(str(ref.combination)) + ' combination)' if ref.scorer == 'mechanism' else ''}, alpha {ref.alpha:g}, "
            f"{ref.fit_count:,} fit and {ref.calibration_count:,} calibration traces, {ref.terms} terms per event; "
            f"sites: {_sites_text(ref.sites)}; created {_fmt_time(ref.created)}, finalized {_fmt_time(ref.finalized)}.</p>"]
    if ref.state != "active":
        return "\n".join(head + [f"<p class='note'>This reference is still collecting ({ref.fit_count + ref.calibration_count:,} "
                                 "trusted traces so far): it scores nothing until it is finalized, so there is nothing to plot.</p>",
                                 "</section>"])
    events = store.events(reference=name, since=since)
    if events.empty:
        window = f" since {html.escape(_fmt_time(pd.Timestamp(_time_text(since))))}" if since is not None else ""
        return "\n".join(head + [f"<p class='note'>No events scored against this reference{window}: nothing to plot yet.</p>",
                                 "</section>"])
    n, k = len(events), int(events["flagged"].sum())
    rate = k / n
    lower, upper = binomial_band(np.array([n]), ref.alpha)
    alert = rate > upper[0]
    head.append("<div class='cards'>" + "".join([
        _card("events", f"{n:,}"), _card("flagged", f"{k:,}", alert),
        _card("flag rate", f"{rate:.2%}", alert), _card("alpha / 95% band", f"{ref.alpha:.1%} / {lower[0]:.1%}–{upper[0]:.1%}"),
        _card("time range (UTC)", f"{_fmt_time(events['time'].min())[:16]} → {_fmt_time(events['time'].max())[11:16]}"
              if events["time"].min().date() == events["time"].max().date() else
              f"{_fmt_time(events['time'].min())[:16]} → {_fmt_time(events['time'].max())[:16]}", small=True),
    ]) + "</div>")
    if alert:
        head.append(f"<p class='note'>The flag rate {rate:.2%} is above what alpha = {ref.alpha:g} allows for {n:,} "
                    f"traces exchangeable with the calibration set (95% band up to {upper[0]:.2%}): the traffic has shifted, "
                    "or contains anomalies.</p>")
    parts = head
    sites = store.event_sites(reference=name, since=since)
    calibration_terms = store.calibration(name)
    cal_scores = store.calibration_scores(name)

    # 1. Distributions.
    if ref.scorer == "independence" and cal_scores["independence"].notna().any():
        statistic, cal, label = events["score"], cal_scores["independence"].to_numpy(), "independence statistic (nats, sum of mean-field surprises)"
    else:
        mahalanobis = sites.groupby("event")["mahalanobis"].sum().reindex(events["event"]).reset_index(drop=True)
        statistic, cal, label = mahalanobis, cal_scores["mahalanobis"].to_numpy(), "Σ over sites of the squared Mahalanobis distance"
    parts += ["<h3>P-values and scores against the calibration set</h3>",
              "<p class='caption'>Left: traffic exchangeable with the calibration set has uniform p-values, so its "
              "histogram of −log₁₀ p follows the dashed line; excess mass on the right is traffic the reference finds "
              f"surprising (the amber line is alpha; right of it is flagged). Right: the {html.escape(label)} of the "
              "traffic against the held-out calibration traces, each as a fraction of its set.</p>",
              figure_distribution(events, statistic, cal, label, ref.alpha, int(ref.calibration_count))]

    # 2. Flag rate over time.
    width = choose_bins(events["time"], n)
    parts += ["<h3>Flag rate over time</h3>",
              f"<p class='caption'>Share of events flagged per {_width_label(width)} bin. If traffic stays like the "
              "calibration set, each bin's rate falls in the amber band 95% of the time; red points are above it. The "
              "lower panel shows how many events each bin holds (flagged in red).</p>",
              figure_flag_rate(events, width, ref.alpha)]

    # 3. Drivers.
    parts.append("<h3>What drives the flags</h3>")
    shares = term_shares(store, name, since, ref.alpha)
    if k == 0:
        parts.append("<p class='note'>No flagged events in this window.</p>")
    elif shares.empty or shares["flagged_share"].isna().all():
        parts.append("<p class='note'>This store keeps no per-term values for these events (scored by schema version 1): "
                     "see the per-site surprise below.</p>")
    else:
        note = (" Transition and dependence terms are reported but not combined by the mechanism scorer."
                if ref.scorer == "mechanism" else "")
        parts += [f"<p class='caption'>For each term of the surprise account, the share of flagged events whose term alone "
                  f"is at least as extreme as alpha (p ≤ {ref.alpha:g}), against the same share among unflagged events "
                  f"(about alpha when nothing is wrong). Interaction and dependence are anomalous when low.{note}</p>",
                  figure_drivers(shares, ref.alpha, k)]

    # 4. Top flagged events.
    parts.append("<h3>Most anomalous flagged events</h3>")
    flagged = events[events["flagged"]].sort_values(["p", "score", "event"], ascending=[True, False, False]).head(TOP_EVENTS)
    if flagged.empty:
        parts.append("<p class='note'>No flagged events in this window.</p>")
    else:
        terms = store.terms(event=flagged["event"].tolist())
        parts += [f"<p class='caption'>The {len(flagged)} flagged events with the smallest p-values ({k:,} flagged in all; "
                  f"<span class='mono'>mechwatch event ID</span> explains one in full).</p>",
                  _events_table(flagged, strongest_terms(terms))]

    # 5. Per-site surprise.
    parts += ["<h3>Per-site surprise over time</h3>",
              f"<p class='caption'>Each site's joint surprise (negative log-likelihood under the site's shrunk "
              f"Gaussian, nats) per {_width_label(width)} bin: the median of the traffic and its interquartile range, "
              + ("against the calibration traces' median and 5–95% range. A site drifting above its grey band is where "
                 "the traffic changed.</p>" if len(calibration_terms) else
                 "(this reference stores no calibration term values to compare with).</p>")]
    if sites.empty:
        parts.append("<p class='note'>No per-site values stored for these events.</p>")
    else:
        parts.append(figure_site_surprise(sites, width, calibration_terms if len(calibration_terms) else None))
        if sites["site"].nunique() > MAX_SITE_PANELS:
            parts.append(f"<p class='caption'>Only the first {MAX_SITE_PANELS} sites are shown.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def build_report(database, reference: Optional[str] = None, since=None) -> str:
    """The report as one HTML document (figures embedded as base64 PNG)."""
    with Store(database) as store:
        refs = store.references()
        if reference is not None and reference not in set(refs["name"]):
            known = ", ".join(refs["name"]) or "none"
            raise KeyError(f"no reference named {reference!r} in {database} (references: {known})")
        shown = refs[refs["name"] == reference] if reference is not None else refs
        events = store.query("SELECT count(*) AS n, sum(flagged) AS k, min(received_at) AS first, max(received_at) AS last "
                             "FROM events e JOIN reference_models r ON r.id = e.reference_id"
                             + (" WHERE r.name = ?" if reference is not None else ""),
                             [reference] if reference is not None else []).iloc[0]
        generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        total, flagged = int(events["n"] or 0), int(events["k"] or 0)
        time_range = (f"{_fmt_time(pd.Timestamp(events['first']))} → {_fmt_time(pd.Timestamp(events['last']))}"
                      if total else "no events")
        title = f"MechWatch report — {os.path.basename(str(database))}"
        info = [("database", os.path.abspath(str(database))), ("schema version", str(store.schema_version)),
                ("references", ", ".join(f"{n} ({s})" for n, s in zip(refs["name"], refs["state"])) or "none"),
                ("events", f"{total:,} stored, {flagged:,} flagged" + (f" ({flagged / total:.2%})" if total else "")),
                ("time range", time_range),
                ("window", f"events since {_fmt_time(pd.Timestamp(_time_text(since)))}" if since is not None else "all events"),
                ("generated", generated)]
        body = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
                "<header><div class='inner'>", f"<h1>{html.escape(title)}</h1>", "<dl>",
                "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in info), "</dl></div></header><main>"]
        if refs.empty:
            body.append("<section class='reference' id='empty'><h2>No references</h2><p class='note'>This store holds no "
                        "references yet: fit one (<span class='mono'>client.fit(...)</span>, then "
                        "<span class='mono'>finalize</span>) and score traffic against it, then run the report again.</p></section>")
        else:
            body += ["<section class='reference' id='overview'><h2>References</h2>", _reference_table(shown), "</section>"]
            for ref in shown.itertuples():
                body.append(reference_section(store, ref, since))
        body.append(f"<footer>Generated by <span class='mono'>python -m mechwatch.report</span> at {generated}; "
                    "the store was opened read-only.</footer></main></body></html>")
        return "\n".join(body)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechwatch.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="the MechWatch SQLite store (opened read-only)")
    parser.add_argument("--reference", help="report on this reference only (default: every reference)")
    parser.add_argument("--since", help="only events received at or after this ISO time (UTC unless it says otherwise)")
    parser.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    args = parser.parse_args(argv)
    if args.since is not None:
        try:
            _time_text(args.since)
        except ValueError:
            parser.error(f"--since: not an ISO time: {args.since!r}")
    try:
        document = build_report(args.database, args.reference, args.since)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"mechwatch.report: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(document)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
