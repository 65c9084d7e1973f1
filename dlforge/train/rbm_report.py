"""The DBN's pretraining report: per RBM and epoch, the reconstruction error beside the likelihood figures."""

from __future__ import annotations

import html

from dlforge.reporting import png_base64

PANELS = (("reconstruction_error", "reconstruction error (MSE)"),
          ("pseudo_log_likelihood", "pseudo-log-likelihood (held-out)"),
          ("free_energy_gap", "free-energy gap (held-out - train)"),
          ("log_likelihood_held_out", "log-likelihood (held-out)"))


def _series(layer: dict, key: str) -> list:
    if key == "reconstruction_error":
        return list(layer["reconstruction_error"])
    return [e.get(key) for e in layer.get("epochs", [])]


def pretraining_png(pretraining: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = pretraining["layers"]
    fig, axes = plt.subplots(len(layers), len(PANELS), figsize=(3.2 * len(PANELS), 2.6 * len(layers)), squeeze=False)
    for row, layer in zip(axes, layers):
        for ax, (key, title) in zip(row, PANELS):
            values = _series(layer, key)
            points = [(i + 1, v) for i, v in enumerate(values) if v is not None]
            if points:
                ax.plot(*zip(*points), "o-")
                final = layer.get("final") or {}
                if key == "log_likelihood_held_out" and "log_z_standard_error" in final:
                    ax.errorbar([len(values)], [final[key]], yerr=[final["log_z_standard_error"]], fmt="none",
                                color="crimson", capsize=4)
            else:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"RBM {layer['layer']} ({layer['visible']}->{layer['hidden']}): {title}", fontsize=7)
            ax.set_xlabel("epoch", fontsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_base64(fig)


def pretraining_html(pretraining: dict) -> str:
    """A page with the per-epoch plot and each RBM's final figures."""
    rows = []
    for layer in pretraining["layers"]:
        f = layer.get("final") or {}
        ll = f.get("log_likelihood_held_out")
        se = f.get("log_z_standard_error")
        shown = "-" if ll is None else f"{ll:.2f}" + (f" &plusmn; {se:.2f}" if se is not None else "")
        rows.append(f"<tr><td>RBM {layer['layer']} ({layer['visible']}&rarr;{layer['hidden']})</td>"
                    f"<td>{html.escape(str(f.get('log_z_method', '-')))}</td><td>{shown}</td>"
                    f"<td>{f.get('log_likelihood_train', '-')}</td><td>{f.get('pseudo_log_likelihood', '-')}</td>"
                    f"<td>{f.get('free_energy_gap', '-')}</td><td>{layer['reconstruction_error'][-1]}</td></tr>")
    method = f"PCD-{pretraining['cd_k']}" if pretraining.get("pcd") else f"CD-{pretraining['cd_k']}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dlforge pretraining</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}} img{{max-width:100%}}</style></head><body>
<h1>DBN pretraining ({method}, {pretraining['epochs']} epochs per RBM)</h1>
<p>Log-likelihoods in nats per example, of data binarized by sampling; log Z exact where the smaller layer has
at most 20 units, else annealed importance sampling (Salakhutdinov &amp; Murray 2008) with its standard error,
measured after the last epoch. The reconstruction error alone is not a convergence measure: CD can lower it
while the likelihood falls (Fischer &amp; Igel 2010).</p>
<table><tr><th>RBM</th><th>log Z</th><th>held-out log-likelihood</th><th>train log-likelihood</th>
<th>pseudo-log-likelihood</th><th>free-energy gap</th><th>reconstruction error</th></tr>{''.join(rows)}</table>
<img alt="pretraining per epoch" src="data:image/png;base64,{pretraining_png(pretraining)}">
</body></html>
"""
